//! Aggregation jobs: pure functions from child proofs (bytes) to a proof (bytes), so any worker
//! can run any node of the tree.

use std::panic::AssertUnwindSafe;

use circuits::circuit::Proof;
use circuits::hash::digest_hex;
use circuits::BatchPublicInputs;
use plonky2::plonk::circuit_data::CommonCircuitData;
use plonky2::recursion::cyclic_recursion::check_cyclic_proof_verifier_data;
use serde::{Deserialize, Serialize};

use crate::error::{AggError, Result};
use crate::recursion::AggregationCircuits;

/// Which circuit a proof belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProofKind {
    /// The batch circuit.
    Batch,
    /// The wrap circuit.
    Wrap,
    /// The merge circuit (block proofs are merge proofs).
    Merge,
}

/// A serialized proof and its circuit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBytes {
    /// The circuit.
    pub kind: ProofKind,
    /// plonky2's `to_bytes`.
    pub bytes: Vec<u8>,
}

/// One node of the aggregation tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggJob {
    /// Wrap a batch proof.
    Wrap {
        /// The batch proof.
        batch: ProofBytes,
    },
    /// Merge two children (wraps or merges); at the root of a one-batch block, one.
    Merge {
        /// The earlier child.
        left: ProofBytes,
        /// The later child.
        right: Option<ProofBytes>,
    },
}

/// Decodes `bytes` as a proof for `common`, insisting on the canonical encoding (no trailing or
/// non-canonical bytes). Never panics: the circuits are only read, so unwinding out of plonky2
/// leaves nothing half-changed.
pub fn decode_proof(bytes: &[u8], common: &CommonCircuitData<circuits::F, 2>) -> Result<Proof> {
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| Proof::from_bytes(bytes.to_vec(), common)))
        .map_err(|_| AggError::MalformedProof("the decoder panicked".into()))?
        .map_err(|e| AggError::MalformedProof(e.to_string()))?;
    if decoded.to_bytes() != bytes {
        return Err(AggError::MalformedProof("not the canonical encoding of a proof".into()));
    }
    Ok(decoded)
}

impl AggregationCircuits {
    /// Decodes and verifies a proof of the given kind; returns it with its batch public inputs.
    pub fn check(&self, p: &ProofBytes) -> Result<(Proof, BatchPublicInputs)> {
        let (common, verifier) = match p.kind {
            ProofKind::Batch => (self.batch_common(), None),
            ProofKind::Wrap => (&self.wrap_circuit().common, Some(self.wrap_circuit())),
            ProofKind::Merge => (&self.block_circuit().common, Some(self.block_circuit())),
        };
        let proof = decode_proof(&p.bytes, common)?;
        let verified = std::panic::catch_unwind(AssertUnwindSafe(|| match verifier {
            None => self.verify_batch(&proof),
            Some(data) => data.verify(proof.clone()),
        }))
        .map_err(|_| AggError::InvalidProof("the verifier panicked".into()))?;
        verified.map_err(|e| AggError::InvalidProof(e.to_string()))?;
        if p.kind == ProofKind::Merge {
            check_cyclic_proof_verifier_data(&proof, &self.block_circuit().verifier_only, common)
                .map_err(|_| AggError::InvalidProof("proof of another merge circuit".into()))?;
        }
        let pis = BatchPublicInputs::from_slice(&proof.public_inputs[..circuits::circuit::NUM_PUBLIC_INPUTS])
            .map_err(|e| AggError::MalformedProof(e.to_string()))?;
        Ok((proof, pis))
    }

    /// Runs a job: checks its children (so a bad child is named, not discovered by a failing
    /// prover), then proves.
    pub fn run(&self, job: &AggJob) -> Result<ProofBytes> {
        match job {
            AggJob::Wrap { batch } => {
                if batch.kind != ProofKind::Batch {
                    return Err(AggError::InvalidJob(format!("a wrap takes a batch proof, not {:?}", batch.kind)));
                }
                let (proof, _) = self.check(batch)?;
                Ok(ProofBytes { kind: ProofKind::Wrap, bytes: self.prove_wrap(&proof)?.to_bytes() })
            }
            AggJob::Merge { left, right } => {
                let child = |p: &ProofBytes| -> Result<(Proof, BatchPublicInputs, bool)> {
                    if p.kind == ProofKind::Batch {
                        return Err(AggError::InvalidJob("a merge takes wrap or merge proofs".into()));
                    }
                    let (proof, pis) = self.check(p)?;
                    Ok((proof, pis, p.kind == ProofKind::Merge))
                };
                let (lp, lpis, lm) = child(left)?;
                let right = right.as_ref().map(child).transpose()?;
                if let Some((_, rpis, _)) = &right {
                    if lpis.new_root != rpis.old_root {
                        return Err(AggError::PublicInputMismatch {
                            field: "right child's old root",
                            expected: digest_hex(&lpis.new_root),
                            got: digest_hex(&rpis.old_root),
                        });
                    }
                    if lpis.commitment_out != rpis.commitment_in {
                        return Err(AggError::PublicInputMismatch {
                            field: "right child's commitment in",
                            expected: digest_hex(&lpis.commitment_out),
                            got: digest_hex(&rpis.commitment_in),
                        });
                    }
                }
                let proof = self.prove_merge((&lp, lm), right.as_ref().map(|(p, _, m)| (p, *m)))?;
                Ok(ProofBytes { kind: ProofKind::Merge, bytes: proof.to_bytes() })
            }
        }
    }
}
