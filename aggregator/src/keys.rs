//! What checking the farm's proofs takes, without what making them takes: the batch and merge
//! circuits' verifier data, and a file format for it.
//!
//! The sequencer checks every proof a worker sends (batch proofs and merges) and the settlement
//! node checks block proofs. Neither proves, yet building the circuits to get their verifier data
//! costs seconds at every start and leaves about a gigabyte of prover data (the constants' and
//! sigmas' low-degree extensions and Merkle trees) in memory. [`VerifierKeys`] is the few
//! kilobytes they need; `rollup circuits --verifier-keys-out FILE` writes them once and the
//! services read them (`docs/services.md`, "Verifier keys").
//!
//! The file: [`MAGIC`], the batch capacity (u32, little-endian), the batch circuit's then the
//! merge circuit's `VerifierCircuitData` in plonky2's encoding (each behind its length, u32), and
//! the SHA-256 of everything before it. The checksum is read before plonky2's decoder sees a
//! byte: that decoder allocates what a length field says, so a damaged length could abort the
//! process where it should be refused.

use std::panic::AssertUnwindSafe;

use circuits::circuit::{Config, Proof, NUM_PUBLIC_INPUTS};
use circuits::hash::digest_hex;
use circuits::{BatchPublicInputs, Digest, F};
use plonky2::field::extension::Extendable;
use plonky2::field::types::Field;
use plonky2::gates::arithmetic_base::ArithmeticGate;
use plonky2::gates::arithmetic_extension::ArithmeticExtensionGate;
use plonky2::gates::base_sum::BaseSumGate;
use plonky2::gates::constant::ConstantGate;
use plonky2::gates::coset_interpolation::CosetInterpolationGate;
use plonky2::gates::exponentiation::ExponentiationGate;
use plonky2::gates::lookup::LookupGate;
use plonky2::gates::lookup_table::LookupTableGate;
use plonky2::gates::multiplication_extension::MulExtensionGate;
use plonky2::gates::noop::NoopGate;
use plonky2::gates::poseidon::PoseidonGate;
use plonky2::gates::poseidon_mds::PoseidonMdsGate;
use plonky2::gates::public_input::PublicInputGate;
use plonky2::gates::random_access::RandomAccessGate;
use plonky2::gates::reducing::ReducingGate;
use plonky2::gates::reducing_extension::ReducingExtensionGate;
use plonky2::hash::hash_types::RichField;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::circuit_data::VerifierCircuitData;
use plonky2::plonk::config::Hasher;
use plonky2::recursion::cyclic_recursion::check_cyclic_proof_verifier_data;
use plonky2::util::serialization::GateSerializer;
use plonky2::{get_gate_tag_impl, impl_gate_serializer, read_gate_impl};
use prover_gpu::gates::RangeCheckGate;
use sha2::{Digest as _, Sha256};

use crate::error::{AggError, Result};
use crate::jobs::{decode_proof, ProofBytes, ProofKind};
use crate::verify::BlockVerifier;

const D: usize = 2;

/// The file's first bytes (and its version).
pub const MAGIC: &[u8; 16] = b"rollup-vkeys-v1\n";

/// Largest file read: the two circuits' data is a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// plonky2's gates and ours, for the circuits' gate lists. The tags are positions in this list:
/// append, never reorder (a file written with one order does not read with another).
#[derive(Debug)]
pub struct RollupGateSerializer;

impl<F: RichField + Extendable<D>, const D: usize> GateSerializer<F, D> for RollupGateSerializer {
    impl_gate_serializer! {
        RollupGateSerializer,
        ArithmeticGate,
        ArithmeticExtensionGate<D>,
        BaseSumGate<2>,
        ConstantGate,
        CosetInterpolationGate<F, D>,
        ExponentiationGate<F, D>,
        LookupGate,
        LookupTableGate,
        MulExtensionGate<D>,
        NoopGate,
        PoseidonMdsGate<F, D>,
        PoseidonGate<F, D>,
        PublicInputGate,
        RandomAccessGate<F, D>,
        ReducingExtensionGate<D>,
        ReducingGate<D>,
        RangeCheckGate
    }
}

/// The batch and merge circuits' verifier data: every check of a proof the network makes.
#[derive(Debug)]
pub struct VerifierKeys {
    capacity: usize,
    batch: VerifierCircuitData<F, Config, D>,
    block: BlockVerifier,
}

impl VerifierKeys {
    /// The keys of circuits built for batches of `capacity` slots.
    pub(crate) fn new(
        capacity: usize,
        batch: VerifierCircuitData<F, Config, D>,
        merge: VerifierCircuitData<F, Config, D>,
    ) -> Self {
        Self { capacity, batch, block: BlockVerifier::from_data(merge) }
    }

    /// Slots per batch of the batch circuit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The block proofs' verifier (the merge circuit's).
    pub fn block(&self) -> &BlockVerifier {
        &self.block
    }

    /// The block verifier key's digest, which names the network (DESIGN.md, decision 6). It
    /// covers the batch circuit's key too: the merge circuit holds it as a constant.
    pub fn digest_hex(&self) -> String {
        self.block.digest_hex()
    }

    pub(crate) fn batch_data(&self) -> &VerifierCircuitData<F, Config, D> {
        &self.batch
    }

    /// The batch circuit's digest.
    pub fn batch_digest(&self) -> Digest {
        self.batch.verifier_only.circuit_digest
    }

    /// Decodes and verifies a proof of the given kind; returns it with its batch public inputs.
    /// Never panics, whatever the bytes.
    pub fn check(&self, p: &ProofBytes) -> Result<(Proof, BatchPublicInputs)> {
        let merge = self.block.data();
        // Both kinds share the merge circuit's common data (`VerifierKeys::from_bytes` and
        // `AggregationCircuits::build` check it).
        let proof = decode_proof(&p.bytes, &merge.common)?;
        let data = match p.kind {
            ProofKind::Batch => &self.batch,
            ProofKind::Merge => merge,
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| data.verify(proof.clone())))
            .map_err(|_| AggError::InvalidProof("the verifier panicked".into()))?
            .map_err(|e| AggError::InvalidProof(e.to_string()))?;
        if p.kind == ProofKind::Merge {
            check_cyclic_proof_verifier_data(&proof, &merge.verifier_only, &merge.common)
                .map_err(|_| AggError::InvalidProof("proof of another merge circuit".into()))?;
        }
        let pis = BatchPublicInputs::from_slice(proof.public_inputs.get(..NUM_PUBLIC_INPUTS).unwrap_or(&[]))
            .map_err(|e| AggError::MalformedProof(e.to_string()))?;
        Ok((proof, pis))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let encode = |data: &VerifierCircuitData<F, Config, D>| {
            data.to_bytes(&RollupGateSerializer)
                .map_err(|_| AggError::VerifierKeys("a gate the key file cannot name".into()))
        };
        let (batch, merge) = (encode(&self.batch)?, encode(self.block.data())?);
        let mut out = Vec::with_capacity(MAGIC.len() + 12 + batch.len() + merge.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32_of(self.capacity)?.to_le_bytes());
        for part in [&batch, &merge] {
            out.extend_from_slice(&u32_of(part.len())?.to_le_bytes());
            out.extend_from_slice(part);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Reads a file written by [`VerifierKeys::to_bytes`], refusing anything else with
    /// [`AggError::VerifierKeys`]: another format or version, damage (the checksum), trailing
    /// bytes, data that plonky2 would encode otherwise, a circuit digest that does not match its
    /// commitment, or two circuits that do not share the shape the merge needs.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| AggError::VerifierKeys(why.to_string());
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(bad("larger than any verifier key file"));
        }
        let body = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("not a verifier key file of this version"))?;
        let (body, sum) = body.split_at_checked(body.len().saturating_sub(32)).ok_or_else(|| bad("truncated"))?;
        if sum.len() != 32 || Sha256::digest(&bytes[..bytes.len() - 32]).as_slice() != sum {
            return Err(bad("damaged (its checksum does not match)"));
        }
        let mut rest = body;
        let capacity = take_u32(&mut rest).ok_or_else(|| bad("truncated before the capacity"))? as usize;
        let batch = take_part(&mut rest).ok_or_else(|| bad("truncated in the batch circuit's key"))?;
        let merge = take_part(&mut rest).ok_or_else(|| bad("truncated in the merge circuit's key"))?;
        if !rest.is_empty() {
            return Err(bad("bytes after the merge circuit's key"));
        }
        if capacity == 0 {
            return Err(bad("a batch circuit of no slots"));
        }
        let batch = decode_data(batch, "batch")?;
        let merge = decode_data(merge, "merge")?;
        if batch.common != merge.common {
            return Err(bad("the batch and merge circuits do not share one shape"));
        }
        if merge.common.num_public_inputs <= NUM_PUBLIC_INPUTS {
            return Err(bad("the merge circuit carries no verifier data"));
        }
        Ok(Self::new(capacity, batch, merge))
    }
}

/// The next little-endian u32 of `rest`.
pub(crate) fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (word, after) = rest.split_first_chunk::<4>()?;
    *rest = after;
    Some(u32::from_le_bytes(*word))
}

/// The next part of `rest` behind its length.
fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    let (part, after) = rest.split_at_checked(len)?;
    *rest = after;
    Some(part)
}

fn u32_of(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| AggError::VerifierKeys(format!("{n} does not fit the file's u32 field")))
}

/// One circuit's verifier data, canonical, with the digest plonky2's builder gives its
/// commitment (no domain separator: the rollup's circuits set none).
fn decode_data(bytes: &[u8], which: &str) -> Result<VerifierCircuitData<F, Config, D>> {
    let bad = |why: &str| AggError::VerifierKeys(format!("the {which} circuit's key: {why}"));
    let data = std::panic::catch_unwind(AssertUnwindSafe(|| {
        VerifierCircuitData::<F, Config, D>::from_bytes(bytes.to_vec(), &RollupGateSerializer)
    }))
    .map_err(|_| bad("the decoder panicked"))?
    .map_err(|_| bad("does not decode"))?;
    if data.to_bytes(&RollupGateSerializer).ok().as_deref() != Some(bytes) {
        return Err(bad("not the canonical encoding"));
    }
    check_digest(&data).map_err(|why| bad(&why))?;
    Ok(data)
}

/// Checks that a circuit's digest is the one plonky2's builder gives its commitment (no domain
/// separator: the rollup's circuits set none), with a cap of its configuration's height.
pub(crate) fn check_digest(data: &VerifierCircuitData<F, Config, D>) -> std::result::Result<(), String> {
    let cap_len = u32::try_from(data.common.config.fri_config.cap_height).ok().and_then(|h| 1usize.checked_shl(h));
    if cap_len != Some(data.verifier_only.constants_sigmas_cap.0.len()) {
        return Err("a commitment cap of the wrong height".into());
    }
    let parts = [
        data.verifier_only.constants_sigmas_cap.flatten(),
        PoseidonHash::hash_pad(&[]).elements.to_vec(),
        vec![F::from_canonical_usize(data.common.degree_bits())],
    ]
    .concat();
    if PoseidonHash::hash_no_pad(&parts) != data.verifier_only.circuit_digest {
        return Err(format!("its digest {} is not its commitment's", digest_hex(&data.verifier_only.circuit_digest)));
    }
    Ok(())
}
