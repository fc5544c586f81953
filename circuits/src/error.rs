//! Errors of the circuits crate.

use thiserror::Error;

/// Why a byte string is not a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes than the layout needs.
    #[error("truncated transaction: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Bytes after the end of the transaction.
    #[error("{extra} trailing bytes after the transaction")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// An encoding version this build does not know.
    #[error("unsupported encoding version {got} (expected {expected})")]
    UnsupportedVersion {
        /// The supported version.
        expected: u8,
        /// The version found.
        got: u8,
    },
    /// A transaction tag this build does not know.
    #[error("unknown transaction tag {tag}")]
    UnknownTag {
        /// The tag found.
        tag: u8,
    },
    /// A field outside its range.
    #[error("{field} = {value} is out of range (max {max})")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The largest allowed value.
        max: u64,
    },
}

/// Why the executor rejected a transaction. A rejected transaction changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TxError {
    /// The account does not exist.
    #[error("unknown account {account}")]
    UnknownAccount {
        /// The account id.
        account: u32,
    },
    /// `Register` names an id that is taken.
    #[error("account {account} already exists")]
    AccountExists {
        /// The account id.
        account: u32,
    },
    /// The nonce is not the sender's next nonce.
    #[error("bad nonce for account {account}: expected {expected}, got {got}")]
    BadNonce {
        /// The sender.
        account: u32,
        /// The account's next nonce.
        expected: u32,
        /// The transaction's nonce.
        got: u32,
    },
    /// The sender's nonce cannot be incremented any more.
    #[error("account {account} has exhausted its nonces")]
    NonceExhausted {
        /// The sender.
        account: u32,
    },
    /// Not enough of a token.
    #[error("insufficient balance of token {token} in account {account}: need {needed}, have {available}")]
    InsufficientBalance {
        /// The account.
        account: u32,
        /// The token.
        token: u16,
        /// Amount needed.
        needed: u64,
        /// Amount held.
        available: u64,
    },
    /// A sum would exceed u64::MAX.
    #[error("overflow: {what}")]
    Overflow {
        /// What overflowed.
        what: &'static str,
    },
    /// The pool does not exist.
    #[error("unknown pool {pool}")]
    UnknownPool {
        /// The pool id.
        pool: u32,
    },
    /// The swap would pay out less than the sender's minimum.
    #[error("slippage: output {out} is below the minimum {min_out}")]
    Slippage {
        /// The computed output.
        out: u64,
        /// The transaction's minimum.
        min_out: u64,
    },
    /// The swap's output rounds to zero.
    #[error("swap output rounds to zero")]
    ZeroOutput,
    /// Transfers and swaps must move a positive amount.
    #[error("amount must be positive")]
    ZeroAmount,
    /// A field is out of the range the state can hold.
    #[error("{field} = {value} is out of range (max {max})")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value.
        value: u64,
        /// The largest allowed value.
        max: u64,
    },
    /// The batch is full.
    #[error("batch is full ({capacity} transactions)")]
    BatchFull {
        /// The batch capacity.
        capacity: usize,
    },
}

/// Errors of genesis construction and of proving.
#[derive(Debug, Error)]
pub enum CircuitError {
    /// A genesis or batch parameter is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The witness does not belong to this circuit (wrong capacity or roots).
    #[error("witness does not fit the circuit: {0}")]
    Witness(String),
    /// The prover refused (the witness breaks a constraint) or failed.
    #[error("proving failed{}: {source}", .gadget.as_ref().map(|g| format!(" in {g}")).unwrap_or_default())]
    Prove {
        /// The gadget whose rows hold the failing constraint (see `BatchCircuit::explain`); none
        /// when the error names no row (the prover's own steps failed, not a constraint).
        gadget: Option<String>,
        /// The prover's error.
        source: prover_gpu::BackendError,
    },
    /// plonky2's verifier rejected a proof.
    #[error("proof verification failed: {0}")]
    Verify(anyhow::Error),
}
