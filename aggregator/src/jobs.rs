//! Aggregation jobs: pure functions from child proofs (bytes) to a proof (bytes), so any worker
//! can run any node of the tree.

use std::panic::AssertUnwindSafe;

use circuits::circuit::Proof;
use circuits::hash::digest_hex;
use circuits::BatchPublicInputs;
use plonky2::plonk::circuit_data::CommonCircuitData;
use plonky2::recursion::cyclic_recursion::check_cyclic_proof_verifier_data;
use prover_gpu::Prover;
use serde::{Deserialize, Serialize};

use crate::error::{AggError, Result};
use crate::recursion::AggregationCircuits;

/// Which circuit a proof belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProofKind {
    /// The batch circuit.
    Batch,
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

/// One node of the aggregation tree above the batch proofs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggJob {
    /// Merge two children (batch or merge proofs); at the root of a one-batch block, one.
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
        let pis = BatchPublicInputs::from_slice(
            proof.public_inputs.get(..circuits::circuit::NUM_PUBLIC_INPUTS).unwrap_or(&[]),
        )
        .map_err(|e| AggError::MalformedProof(e.to_string()))?;
        Ok((proof, pis))
    }

    /// Runs a job: checks its children (so a bad child is named, not discovered by a failing
    /// prover), then proves.
    pub fn run(&self, prover: &Prover, job: &AggJob) -> Result<ProofBytes> {
        match job {
            AggJob::Merge { left, right } => {
                let child = |p: &ProofBytes| -> Result<(Proof, BatchPublicInputs, bool)> {
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
                let proof = self.prove_merge(prover, (&lp, lm), right.as_ref().map(|(p, _, m)| (p, *m)))?;
                Ok(ProofBytes { kind: ProofKind::Merge, bytes: proof.to_bytes() })
            }
        }
    }
}

/// Proofs larger than this are refused when decoding a job.
const MAX_PROOF_BYTES: usize = 8 << 20;

impl ProofKind {
    fn tag(self) -> u8 {
        match self {
            ProofKind::Batch => 1,
            ProofKind::Merge => 3,
        }
    }

    fn from_tag(t: u8) -> Result<Self> {
        match t {
            1 => Ok(ProofKind::Batch),
            // 2 was the wrap circuit's, which batch proofs no longer need.
            3 => Ok(ProofKind::Merge),
            t => Err(AggError::InvalidJob(format!("unknown proof kind {t}"))),
        }
    }
}

fn put_proof(out: &mut Vec<u8>, p: &ProofBytes) {
    out.push(p.kind.tag());
    out.extend_from_slice(&(p.bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&p.bytes);
}

fn take_proof(b: &mut &[u8]) -> Result<ProofBytes> {
    let short = || AggError::InvalidJob("truncated job".into());
    let (&tag, rest) = b.split_first().ok_or_else(short)?;
    let kind = ProofKind::from_tag(tag)?;
    let len_bytes: [u8; 4] = rest.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(short)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PROOF_BYTES {
        return Err(AggError::InvalidJob(format!("proof of {len} bytes is too large")));
    }
    let bytes = rest.get(4..4 + len).ok_or_else(short)?.to_vec();
    *b = &rest[4 + len..];
    Ok(ProofBytes { kind, bytes })
}

impl AggJob {
    /// Binary encoding: `2 ‖ left ‖ has_right ‖ [right]` for a merge (tag 1 was the wrap's),
    /// each proof as `kind ‖ len (u32 LE) ‖ bytes`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            AggJob::Merge { left, right } => {
                out.push(2);
                put_proof(&mut out, left);
                out.push(right.is_some() as u8);
                if let Some(r) = right {
                    put_proof(&mut out, r);
                }
            }
        }
        out
    }

    /// Decodes [`AggJob::to_bytes`], checking every length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (&tag, mut rest) = bytes.split_first().ok_or_else(|| AggError::InvalidJob("empty job".into()))?;
        let job = match tag {
            2 => {
                let left = take_proof(&mut rest)?;
                let (&has, r) = rest.split_first().ok_or_else(|| AggError::InvalidJob("truncated job".into()))?;
                rest = r;
                let right = match has {
                    0 => None,
                    1 => Some(take_proof(&mut rest)?),
                    x => return Err(AggError::InvalidJob(format!("bad flag {x}"))),
                };
                AggJob::Merge { left, right }
            }
            t => return Err(AggError::InvalidJob(format!("unknown job tag {t}"))),
        };
        if !rest.is_empty() {
            return Err(AggError::InvalidJob("trailing bytes".into()));
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_bytes_round_trip() {
        let p = |kind, n: u8| ProofBytes { kind, bytes: vec![n; n as usize] };
        for job in [
            AggJob::Merge { left: p(ProofKind::Batch, 5), right: None },
            AggJob::Merge { left: p(ProofKind::Merge, 1), right: Some(p(ProofKind::Batch, 0)) },
            AggJob::Merge { left: p(ProofKind::Merge, 3), right: Some(p(ProofKind::Merge, 2)) },
        ] {
            let b = job.to_bytes();
            assert_eq!(AggJob::from_bytes(&b).expect("decodes"), job);
            for cut in 0..b.len() {
                assert!(AggJob::from_bytes(&b[..cut]).is_err());
            }
        }
        assert!(AggJob::from_bytes(&[2, 1, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        // The retired wrap job and wrap proof kind are refused, not misread.
        assert!(AggJob::from_bytes(&[1, 1, 0, 0, 0, 0]).is_err());
        assert!(AggJob::from_bytes(&[2, 2, 0, 0, 0, 0, 0]).is_err());
    }
}
