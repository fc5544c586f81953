//! A transaction with its sender's signature: `tx.encode() ‖ signature (64 bytes, EIP-196)`.

use thiserror::Error;

use super::{BlsError, Signature, G1_LEN};
use crate::error::DecodeError;
use crate::tx::Tx;

/// Why bytes are not a signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SignedTxError {
    /// Fewer bytes than a signature.
    #[error("signed transaction of {got} bytes is shorter than its signature")]
    Truncated {
        /// Bytes given.
        got: usize,
    },
    /// The transaction part does not decode.
    #[error("transaction: {0}")]
    Tx(#[from] DecodeError),
    /// The signature part is not a valid G1 point.
    #[error("signature: {0}")]
    Signature(#[from] BlsError),
}

/// A transaction and its signature (not yet checked against a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Tx,
    /// The sender's signature on `tx_message(tx)`.
    pub signature: Signature,
}

impl SignedTx {
    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.tx.encode();
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Parses canonical bytes; the signature must be a valid point.
    pub fn decode(bytes: &[u8]) -> Result<Self, SignedTxError> {
        if bytes.len() < G1_LEN {
            return Err(SignedTxError::Truncated { got: bytes.len() });
        }
        let (tx, sig) = bytes.split_at(bytes.len() - G1_LEN);
        Ok(SignedTx { tx: Tx::decode(tx)?, signature: Signature::from_bytes(sig)? })
    }
}
