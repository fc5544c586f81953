//! Domain errors to gRPC statuses, in one place.

use aggregator::AggError;
use circuits::bls::{BlsError, SignedTxError};
use circuits::TxError;
use tonic::Status;

/// An executor rejection.
pub fn tx_error(e: &TxError) -> Status {
    match e {
        TxError::ZeroAmount | TxError::OutOfRange { .. } => Status::invalid_argument(e.to_string()),
        TxError::BatchFull { .. } => Status::resource_exhausted(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// Bytes that are not a signed transaction.
pub fn signed_tx_error(e: &SignedTxError) -> Status {
    Status::invalid_argument(format!("malformed signed transaction: {e}"))
}

/// A signature or key that does not check.
pub fn bls_error(e: &BlsError) -> Status {
    Status::invalid_argument(format!("signature: {e}"))
}

/// A proof that does not check.
pub fn proof_error(e: &AggError) -> Status {
    match e {
        AggError::Build(_) | AggError::Prove(_) | AggError::Backend { .. } => Status::internal(e.to_string()),
        _ => Status::invalid_argument(format!("proof: {e}")),
    }
}

/// Storage failures are the node's own problem.
pub fn storage(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("storage: {e}"))
}
