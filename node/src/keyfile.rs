//! Key files: a BLS secret key and its public key as JSON, readable by the owner only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use circuits::bls::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (an optional `0x` prefix allowed).
pub fn from_hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim().trim_start_matches("0x");
    if !s.len().is_multiple_of(2) {
        bail!("hex string of odd length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex at {i}")))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    /// Big-endian scalar.
    secret_key: String,
    /// EIP-197 G2 point.
    public_key: String,
}

/// Writes `sk` to a new file with mode 0600; refuses to replace an existing file.
pub fn write(path: &Path, sk: &SecretKey) -> Result<()> {
    let body =
        KeyFile { version: 1, secret_key: to_hex(&sk.to_bytes()), public_key: to_hex(&sk.public_key().to_bytes()) };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(&body)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// Reads a key file, checking that its public key belongs to its secret key.
pub fn read(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let k: KeyFile = serde_json::from_str(&text).context("key file is not valid JSON")?;
    if k.version != 1 {
        bail!("unsupported key file version {}", k.version);
    }
    let sk = SecretKey::from_bytes(&from_hex(&k.secret_key)?).context("secret key")?;
    let pk = PublicKey::from_bytes(&from_hex(&k.public_key)?).context("public key")?;
    if sk.public_key() != pk {
        bail!("the key file's public key does not belong to its secret key");
    }
    Ok(sk)
}
