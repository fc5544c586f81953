//! What the process-level tests share: the built binary started with its log in a file, killed
//! with SIGKILL, and waited on over gRPC.
#![allow(dead_code)] // each test crate uses its own part of it

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// A child process of the `rollup` binary, killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts `rollup ARGS` with its stderr (the log, at info) in `dir/log`, appended to, so that a
/// restarted process's log follows the one before it.
pub fn spawn(dir: &Path, log: &str, args: &[&str]) -> Proc {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(log)).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_rollup"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("start rollup");
    Proc(child)
}

pub fn kill(p: Proc) {
    drop(p); // SIGKILL: no chance to clean up
}

/// Polls `f` every 200 ms until it gives a value; panics naming `what` after `secs`.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A channel to a server on this port, once it listens (the services build their circuits first).
pub async fn channel(port: u16) -> Channel {
    let url = format!("http://127.0.0.1:{port}");
    wait_for("a server", 180, || {
        let url = url.clone();
        async move { tonic::transport::Endpoint::from_shared(url).ok()?.connect().await.ok() }
    })
    .await
}

/// Starts `rollup circuits --capacity CAPACITY --verifier-keys-out dir/keys.bin
/// --prover-data-out dir/prover.bin --no-proof` (its log in `dir/circuits.log`); [`exited`]
/// waits for it. The services given `--verifier-keys` with the first file, and the workers given
/// `--prover-data` with the second, start without building the circuits.
pub fn write_circuit_files(dir: &Path, capacity: &str) -> (Proc, CircuitFiles) {
    let files = CircuitFiles { keys: dir.join("keys.bin"), prover_data: dir.join("prover.bin") };
    let args = [
        "circuits",
        "--capacity",
        capacity,
        "--verifier-keys-out",
        files.keys.to_str().expect("utf8"),
        "--prover-data-out",
        files.prover_data.to_str().expect("utf8"),
        "--no-proof",
    ];
    (spawn(dir, "circuits.log", &args), files)
}

/// The files [`write_circuit_files`] writes.
#[derive(Clone, Debug)]
pub struct CircuitFiles {
    /// The verifier keys (`--verifier-keys`).
    pub keys: std::path::PathBuf,
    /// The prover data (`--prover-data`).
    pub prover_data: std::path::PathBuf,
}

/// Waits for `p` to exit, and returns how; panics naming `what` after `secs`.
pub async fn exited(p: &mut Proc, what: &str, secs: u64) -> std::process::ExitStatus {
    wait_for(what, secs, || {
        let r = p.0.try_wait().expect("wait");
        async move { r }
    })
    .await
}
