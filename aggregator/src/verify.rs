//! The settlement node's check of a block proof: bytes plus the expected public inputs in, a typed
//! verdict out, whatever the bytes.

use std::panic::AssertUnwindSafe;

use circuits::circuit::{Config, NUM_PUBLIC_INPUTS};
use circuits::hash::{digest_hex, ZERO_DIGEST};
use circuits::{BatchPublicInputs, Digest, F};
use plonky2::plonk::circuit_data::VerifierCircuitData;
use plonky2::recursion::cyclic_recursion::check_cyclic_proof_verifier_data;

use crate::error::{AggError, Result};
use crate::jobs::decode_proof;
use crate::recursion::AggregationCircuits;

/// What a block proof claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPublicInputs {
    /// State root before the block (the settled head's).
    pub old_root: Digest,
    /// State root after the block.
    pub new_root: Digest,
    /// Commitment chain from zero over the block's transactions (`circuits::tx::commitment`).
    pub commitment: Digest,
}

/// Verifies block proofs against the one pinned verifier key.
#[derive(Debug)]
pub struct BlockVerifier {
    data: VerifierCircuitData<F, Config, 2>,
}

impl BlockVerifier {
    /// The verifier of the merge circuit.
    pub fn new(circuits: &AggregationCircuits) -> Self {
        Self::from_data(circuits.block_circuit().verifier_data())
    }

    pub(crate) fn from_data(data: VerifierCircuitData<F, Config, 2>) -> Self {
        Self { data }
    }

    /// The merge circuit's verifier data.
    pub(crate) fn data(&self) -> &VerifierCircuitData<F, Config, 2> {
        &self.data
    }

    /// The verifier key's digest (plonky2's circuit digest, which covers the constants and
    /// permutation commitment).
    pub fn digest(&self) -> Digest {
        self.data.verifier_only.circuit_digest
    }

    /// Hex of [`BlockVerifier::digest`].
    pub fn digest_hex(&self) -> String {
        digest_hex(&self.digest())
    }

    /// Checks `bytes` is a block proof of exactly `expected`.
    pub fn verify(&self, bytes: &[u8], expected: &BlockPublicInputs) -> Result<()> {
        let proof = decode_proof(bytes, &self.data.common)?;
        let got = BatchPublicInputs::from_slice(proof.public_inputs.get(..NUM_PUBLIC_INPUTS).unwrap_or(&[]))
            .map_err(|e| AggError::MalformedProof(e.to_string()))?;
        let checks = [
            ("old_root", expected.old_root, got.old_root),
            ("new_root", expected.new_root, got.new_root),
            ("commitment_in", ZERO_DIGEST, got.commitment_in),
            ("commitment", expected.commitment, got.commitment_out),
        ];
        for (field, e, g) in checks {
            if e != g {
                return Err(AggError::PublicInputMismatch { field, expected: digest_hex(&e), got: digest_hex(&g) });
            }
        }
        check_cyclic_proof_verifier_data(&proof, &self.data.verifier_only, &self.data.common)
            .map_err(|_| AggError::InvalidProof("the proof carries another circuit's verifier key".into()))?;
        std::panic::catch_unwind(AssertUnwindSafe(|| self.data.verify(proof.clone())))
            .map_err(|_| AggError::InvalidProof("the verifier panicked".into()))?
            .map_err(|e| AggError::InvalidProof(e.to_string()))
    }
}
