//! Aggregation jobs: pure functions from child proofs (bytes) to a proof (bytes), so any worker
//! can run any node of the tree.

use std::panic::AssertUnwindSafe;

use circuits::circuit::Proof;
use circuits::hash::digest_hex;
use circuits::BatchPublicInputs;
use plonky2::iop::witness::PartialWitness;
use plonky2::plonk::circuit_data::CommonCircuitData;
use prover_gpu::Prover;
use serde::{Deserialize, Serialize};

use crate::error::{AggError, Result};
use crate::recursion::{check_children, AggregationCircuits};

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
    /// Merge one to [`MERGE_ARITY`](crate::MERGE_ARITY) children (batch or merge proofs), in block order; a merge of
    /// one is the root of a one-batch block.
    Merge {
        /// The children, earliest first.
        children: Vec<ProofBytes>,
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
    /// Decodes and verifies a proof of the given kind; returns it with its batch public inputs
    /// ([`VerifierKeys::check`](crate::VerifierKeys::check)).
    pub fn check(&self, p: &ProofBytes) -> Result<(Proof, BatchPublicInputs)> {
        self.keys().check(p)
    }

    /// Runs a job: checks its children (so a bad child is named, not discovered by a failing
    /// prover), then proves.
    pub fn run(&self, prover: &Prover, job: &AggJob) -> Result<ProofBytes> {
        let inputs = self.job_inputs(job)?;
        let proof = prover.prove(self.block_circuit(), inputs)?;
        Ok(ProofBytes { kind: ProofKind::Merge, bytes: proof.to_bytes() })
    }

    /// A job's inputs to the merge circuit ([`block_circuit`](Self::block_circuit)), after the
    /// checks [`run`](Self::run) makes: for a prover that times the merge's steps.
    pub fn job_inputs(&self, job: &AggJob) -> Result<PartialWitness<circuits::F>> {
        match job {
            AggJob::Merge { children } => {
                // Before any child is decoded or verified.
                check_children(children.len())?;
                let checked = children
                    .iter()
                    .map(|p| self.check(p).map(|(proof, pis)| (proof, pis, p.kind == ProofKind::Merge)))
                    .collect::<Result<Vec<_>>>()?;
                for pair in checked.windows(2) {
                    let (before, after) = (&pair[0].1, &pair[1].1);
                    if before.new_root != after.old_root {
                        return Err(AggError::PublicInputMismatch {
                            field: "a child's old root",
                            expected: digest_hex(&before.new_root),
                            got: digest_hex(&after.old_root),
                        });
                    }
                    if before.commitment_out != after.commitment_in {
                        return Err(AggError::PublicInputMismatch {
                            field: "a child's commitment in",
                            expected: digest_hex(&before.commitment_out),
                            got: digest_hex(&after.commitment_in),
                        });
                    }
                }
                let refs: Vec<(&Proof, bool)> = checked.iter().map(|(p, _, m)| (p, *m)).collect();
                self.merge_witness(&refs)
            }
        }
    }
}

/// The job tag of a merge (of up to six children: [`MERGE_ARITY`](crate::MERGE_ARITY)).
const MERGE_TAG: u8 = 6;

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

fn put_proof(out: &mut Vec<u8>, kind: ProofKind, bytes: &[u8]) {
    out.push(kind.tag());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
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
    /// Binary encoding: `6 ‖ count (u8) ‖ children` for a merge, each proof as
    /// `kind ‖ len (u32 LE) ‖ bytes`. Tag 1 was the wrap's, 2 the two-child merge's and 4 the
    /// four-child merge's, whose circuit selected between two proofs a child.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            AggJob::Merge { children } => Self::merge_bytes(children.iter().map(|c| (c.kind, &c.bytes[..]))),
        }
    }

    /// [`AggJob::to_bytes`] of a merge of `children`, from proofs held elsewhere: what a
    /// coordinator that shares its proofs encodes, without gathering copies of them first.
    pub fn merge_bytes<'a>(children: impl ExactSizeIterator<Item = (ProofKind, &'a [u8])> + Clone) -> Vec<u8> {
        let len = children.clone().map(|(_, b)| 5 + b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(2 + len);
        out.push(MERGE_TAG);
        out.push(children.len() as u8);
        for (kind, bytes) in children {
            put_proof(&mut out, kind, bytes);
        }
        out
    }

    /// Decodes [`AggJob::to_bytes`], checking every length and the number of children.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (&tag, mut rest) = bytes.split_first().ok_or_else(|| AggError::InvalidJob("empty job".into()))?;
        let job = match tag {
            MERGE_TAG => {
                let (&count, r) = rest.split_first().ok_or_else(|| AggError::InvalidJob("truncated job".into()))?;
                rest = r;
                check_children(count as usize)?;
                let children = (0..count).map(|_| take_proof(&mut rest)).collect::<Result<Vec<_>>>()?;
                AggJob::Merge { children }
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
    use crate::MERGE_ARITY;

    #[test]
    fn job_bytes_round_trip() {
        let p = |kind, n: u8| ProofBytes { kind, bytes: vec![n; n as usize] };
        for job in [
            AggJob::Merge { children: vec![p(ProofKind::Batch, 5)] },
            AggJob::Merge { children: vec![p(ProofKind::Merge, 1), p(ProofKind::Batch, 0)] },
            AggJob::Merge {
                children: vec![
                    p(ProofKind::Merge, 3),
                    p(ProofKind::Merge, 2),
                    p(ProofKind::Batch, 4),
                    p(ProofKind::Batch, 1),
                ],
            },
        ] {
            let b = job.to_bytes();
            assert_eq!(AggJob::from_bytes(&b).expect("decodes"), job);
            for cut in 0..b.len() {
                assert!(AggJob::from_bytes(&b[..cut]).is_err());
            }
        }
        assert!(AggJob::from_bytes(&[MERGE_TAG, 1, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // No children, or more than a merge takes, are refused before any proof is read.
        assert!(AggJob::from_bytes(&[MERGE_TAG, 0]).is_err());
        let most = AggJob::Merge { children: vec![p(ProofKind::Batch, 1); MERGE_ARITY] };
        assert_eq!(AggJob::from_bytes(&most.to_bytes()).expect("decodes"), most);
        let too_many = AggJob::Merge { children: vec![p(ProofKind::Batch, 1); MERGE_ARITY + 1] }.to_bytes();
        assert!(AggJob::from_bytes(&too_many).is_err());
        // The retired wrap job, the retired two- and four-child merges and the wrap proof kind
        // are refused, not misread.
        assert!(AggJob::from_bytes(&[1, 1, 0, 0, 0, 0]).is_err());
        assert!(AggJob::from_bytes(&[2, 1, 0, 0, 0, 0, 0]).is_err());
        let mut four = AggJob::Merge { children: vec![p(ProofKind::Batch, 1)] }.to_bytes();
        four[0] = 4;
        assert!(AggJob::from_bytes(&four).is_err());
        assert!(AggJob::from_bytes(&[MERGE_TAG, 1, 2, 0, 0, 0, 0]).is_err());
    }
}
