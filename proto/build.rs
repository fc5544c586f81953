//! Compiles `proto/rollup.proto` with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the file descriptor set for server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rollup.proto");
    let fds = protox::compile(["proto/rollup.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("rollup_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
