//! The circuits' prover data in a file, so that a worker starts without building them.
//!
//! Building the batch and merge circuits is mostly plonky2's preprocessing: the low-degree
//! extensions of the constants and sigmas and their Merkle trees, a scalar Poseidon hash of every
//! row of an 8-times extension. It takes 18 s for the 2^15-row circuits on a 2-core Zen 1 and
//! grows with the rows, and every worker did it at every start, restarts included, before its
//! first lease. `rollup circuits --prover-data-out FILE` writes what the build made once;
//! `rollup prover --prover-data FILE` reads it in a small part of that time (`docs/services.md`,
//! "Prover data"), as the sequencer and settlement node read their verifier keys
//! (`crate::keys`).
//!
//! The file: [`MAGIC`], then three sections, each its length (u64, little-endian), its bytes and
//! their SHA-256:
//! - the header: the `aggregator` crate's version (its length as a u32, then UTF-8), the batch
//!   capacity, the padding's least degree bits and public inputs, and its gates as indices into
//!   the batch circuit's gate list (all u32);
//! - the batch circuit's `CircuitData` in plonky2's encoding ([`RollupGateSerializer`],
//!   [`RollupGeneratorSerializer`]);
//! - the merge circuit's.
//!
//! Each section's checksum is read before its bytes are decoded: plonky2's decoder allocates
//! what a length field says and panics on some damage, and a damaged constant would make proofs
//! that no verifier accepts. A section is read whole, so the peak while reading is the circuits
//! decoded so far and one section's bytes.
//!
//! What the file holds is one version's circuits: the witness generators are encoded by their
//! position in [`RollupGeneratorSerializer`]'s list and their fields, which another version may
//! lay out otherwise, so another version's file is refused by its header. That the circuits are
//! the network's is checked where a worker registers: the block verifier key they make must be
//! the coordinator's.

use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;

use circuits::circuit::generators::{
    CarryGenerator, InverseGenerator, SplitGenerator as LimbSplitGenerator, SwapGenerator,
};
use circuits::circuit::Config;
use circuits::{BatchCircuit, Padding, F};
use plonky2::gadgets::arithmetic::EqualityGenerator;
use plonky2::gadgets::arithmetic_extension::QuotientGeneratorExtension;
use plonky2::gadgets::range_check::LowHighGenerator;
use plonky2::gadgets::split_base::BaseSumGenerator;
use plonky2::gadgets::split_join::{SplitGenerator, WireSplitGenerator};
use plonky2::gates::arithmetic_base::ArithmeticBaseGenerator;
use plonky2::gates::arithmetic_extension::ArithmeticExtensionGenerator;
use plonky2::gates::base_sum::BaseSplitGenerator;
use plonky2::gates::coset_interpolation::InterpolationGenerator;
use plonky2::gates::exponentiation::ExponentiationGenerator;
use plonky2::gates::lookup::LookupGenerator;
use plonky2::gates::lookup_table::LookupTableGenerator;
use plonky2::gates::multiplication_extension::MulExtensionGenerator;
use plonky2::gates::poseidon::PoseidonGenerator;
use plonky2::gates::poseidon_mds::PoseidonMdsGenerator;
use plonky2::gates::random_access::RandomAccessGenerator;
use plonky2::gates::reducing::ReducingGenerator;
use plonky2::gates::reducing_extension::ReducingGenerator as ReducingExtensionGenerator;
use plonky2::iop::generator::{
    ConstantGenerator, CopyGenerator, NonzeroTestGenerator, RandomValueGenerator, SimpleGenerator, WitnessGeneratorRef,
};
use plonky2::plonk::circuit_data::{CircuitData, CommonCircuitData};
use plonky2::read_generator_impl;
use plonky2::util::serialization::{Buffer, IoError, IoResult, Read as _, WitnessGeneratorSerializer, Write as _};
use prover_gpu::gates::LimbsGenerator;
use sha2::{Digest as _, Sha256};

use crate::error::{AggError, Result};
use crate::keys::{take_u32, RollupGateSerializer};
use crate::recursion::AggregationCircuits;

const D: usize = 2;

/// The file's first bytes (and its format's version).
pub const MAGIC: &[u8; 16] = b"rollup-prover-1\n";

/// The version whose circuits a file holds.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest header: a version string and a few dozen u32s.
const MAX_HEADER_BYTES: u64 = 4096;

macro_rules! generator_serializer {
    ($($generator:ty),+ $(,)?) => {
        /// The generators of the rollup's circuits, named by their position in this list:
        /// plonky2's (as its default serializer lists them, but its dummy proofs', which the
        /// rollup's recursion does not make) and ours. Append, never reorder.
        #[derive(Debug)]
        pub struct RollupGeneratorSerializer;

        impl RollupGeneratorSerializer {
            /// The tag of a generator of id `id`; `None` for one not in the list.
            fn tag(id: &str) -> Option<u32> {
                let ids = [$(SimpleGenerator::<F, D>::id(&<$generator>::default())),+];
                ids.iter().position(|known| known == id).map(|i| i as u32)
            }
        }

        impl WitnessGeneratorSerializer<F, D> for RollupGeneratorSerializer {
            fn read_generator(
                &self,
                buf: &mut Buffer,
                common: &CommonCircuitData<F, D>,
            ) -> IoResult<WitnessGeneratorRef<F, D>> {
                let tag = buf.read_u32()?;
                read_generator_impl!(buf, tag, common, $($generator),+)
            }

            fn write_generator(
                &self,
                buf: &mut Vec<u8>,
                generator: &WitnessGeneratorRef<F, D>,
                common: &CommonCircuitData<F, D>,
            ) -> IoResult<()> {
                let tag = Self::tag(&generator.0.id()).ok_or(IoError)?;
                buf.write_u32(tag)?;
                generator.0.serialize(buf, common)
            }
        }
    };
}

generator_serializer! {
    ArithmeticBaseGenerator<F, D>,
    ArithmeticExtensionGenerator<F, D>,
    BaseSplitGenerator<2>,
    BaseSumGenerator<2>,
    ConstantGenerator<F>,
    CopyGenerator,
    EqualityGenerator,
    ExponentiationGenerator<F, D>,
    InterpolationGenerator<F, D>,
    LookupGenerator,
    LookupTableGenerator,
    LowHighGenerator,
    MulExtensionGenerator<F, D>,
    NonzeroTestGenerator,
    PoseidonGenerator<F, D>,
    PoseidonMdsGenerator<D>,
    QuotientGeneratorExtension<D>,
    RandomAccessGenerator<F, D>,
    RandomValueGenerator,
    ReducingGenerator<D>,
    ReducingExtensionGenerator<D>,
    SplitGenerator,
    WireSplitGenerator,
    CarryGenerator,
    InverseGenerator,
    LimbSplitGenerator,
    SwapGenerator,
    LimbsGenerator,
}

/// Writes the prover data of `batch` and `circuits` (one [`AggregationCircuits::build`]'s) to
/// `out`; returns the bytes written.
pub fn write(batch: &BatchCircuit, circuits: &AggregationCircuits, out: &mut impl Write) -> Result<u64> {
    let bad = |why: String| AggError::ProverData(why);
    let merge = circuits.block_circuit();
    for (which, data) in [("batch", batch.data()), ("merge", merge)] {
        if let Some(g) =
            data.prover_only.generators.iter().find(|g| RollupGeneratorSerializer::tag(&g.0.id()).is_none())
        {
            return Err(bad(format!("the {which} circuit has a witness generator the file cannot name: {}", g.0.id())));
        }
    }
    let padding = circuits.padding();
    let gates = &batch.data().common.gates;
    let mut header = Vec::new();
    header.extend_from_slice(&u32_of(VERSION.len())?.to_le_bytes());
    header.extend_from_slice(VERSION.as_bytes());
    for n in [batch.capacity(), padding.min_degree_bits, padding.public_inputs, padding.gates.len()] {
        header.extend_from_slice(&u32_of(n)?.to_le_bytes());
    }
    for gate in &padding.gates {
        let i = gates
            .iter()
            .position(|g| g == gate)
            .ok_or_else(|| bad(format!("the padding's gate {} is not among the batch circuit's", gate.0.id())))?;
        header.extend_from_slice(&u32_of(i)?.to_le_bytes());
    }
    let encode = |data: &CircuitData<F, Config, D>, which: &str| {
        data.to_bytes(&RollupGateSerializer, &RollupGeneratorSerializer)
            .map_err(|_| bad(format!("the {which} circuit does not encode")))
    };
    let io = |e: std::io::Error| bad(format!("writing: {e}"));
    out.write_all(MAGIC).map_err(io)?;
    let mut written = MAGIC.len() as u64;
    written += write_section(out, &header).map_err(io)?;
    // One circuit's bytes at a time: each is hundreds of megabytes at 2^15 rows.
    written += write_section(out, &encode(batch.data(), "batch")?).map_err(io)?;
    written += write_section(out, &encode(merge, "merge")?).map_err(io)?;
    Ok(written)
}

/// Reads a file [`write`] wrote, of `len` bytes, refusing anything else with
/// [`AggError::ProverData`]: another format or version, damage (a section's checksum), a
/// truncated file or bytes after it, circuits whose prover and verifier parts disagree or that
/// do not fit their layouts.
pub fn read(input: &mut impl Read, len: u64) -> Result<(BatchCircuit, AggregationCircuits)> {
    Header::read(input, len)?.read_circuits(input)
}

/// A prover data file's header, read before its circuits: what they are for.
#[derive(Debug)]
pub struct Header {
    /// Slots per batch of the batch circuit.
    pub capacity: usize,
    min_degree_bits: usize,
    public_inputs: usize,
    gate_indices: Vec<usize>,
    /// Bytes of the file after the header.
    left: u64,
}

impl Header {
    /// Reads the header of a file of `len` bytes: its format, version and capacity.
    pub fn read(input: &mut impl Read, len: u64) -> Result<Self> {
        let bad = |why: &str| AggError::ProverData(why.to_string());
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|_| bad("shorter than its first bytes"))?;
        if &magic != MAGIC {
            return Err(bad("not a prover data file of this format"));
        }
        let mut left = len.saturating_sub(MAGIC.len() as u64);
        let header = read_section(input, &mut left, MAX_HEADER_BYTES, "header")?;
        let mut rest = header.as_slice();
        let version_len = take_u32(&mut rest).ok_or_else(|| bad("truncated header"))? as usize;
        let (version, after) = rest.split_at_checked(version_len).ok_or_else(|| bad("truncated header"))?;
        rest = after;
        if version != VERSION.as_bytes() {
            return Err(AggError::ProverData(format!(
                "written by version {} of rollup, and this is {VERSION}: write it again with `rollup circuits \
                 --prover-data-out`",
                String::from_utf8_lossy(version)
            )));
        }
        let mut next = || take_u32(&mut rest).map(|n| n as usize).ok_or_else(|| bad("truncated header"));
        let (capacity, min_degree_bits, public_inputs, gate_count) = (next()?, next()?, next()?, next()?);
        let gate_indices = (0..gate_count).map(|_| next()).collect::<Result<Vec<_>>>()?;
        if !rest.is_empty() {
            return Err(bad("bytes after the header's fields"));
        }
        circuits::check_capacity(capacity).map_err(|e| AggError::ProverData(e.to_string()))?;
        Ok(Self { capacity, min_degree_bits, public_inputs, gate_indices, left })
    }

    /// Reads the circuits that follow the header in `input`, to the file's end.
    pub fn read_circuits(self, input: &mut impl Read) -> Result<(BatchCircuit, AggregationCircuits)> {
        let bad = |why: &str| AggError::ProverData(why.to_string());
        let mut left = self.left;
        let most = left;
        let batch = decode(&read_section(input, &mut left, most, "batch circuit")?, "batch")?;
        let merge = decode(&read_section(input, &mut left, most, "merge circuit")?, "merge")?;
        if left != 0 || input.read(&mut [0u8; 1]).map_err(|e| bad(&format!("reading: {e}")))? != 0 {
            return Err(bad("bytes after the merge circuit"));
        }
        let gates = self
            .gate_indices
            .iter()
            .map(|&i| batch.common.gates.get(i).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("a padding gate past the batch circuit's gates"))?;
        let padding = Padding { gates, min_degree_bits: self.min_degree_bits, public_inputs: self.public_inputs };
        AggregationCircuits::with_data(self.capacity, padding, batch, merge)
    }
}

/// Writes one section: its length, its bytes, their SHA-256. Returns the bytes written.
fn write_section(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<u64> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    out.write_all(&Sha256::digest(bytes))?;
    Ok(8 + bytes.len() as u64 + 32)
}

/// Reads one section of at most `most` bytes, of the `left` the file has, and checks its sum.
fn read_section(input: &mut impl Read, left: &mut u64, most: u64, which: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| AggError::ProverData(format!("the {which}: {why}"));
    let mut word = [0u8; 8];
    input.read_exact(&mut word).map_err(|_| bad("truncated before its length"))?;
    let n = u64::from_le_bytes(word);
    let need = n.checked_add(8 + 32).ok_or_else(|| bad("a length past any file"))?;
    if need > *left {
        return Err(bad("truncated (its length is past the file's end)"));
    }
    if n > most {
        return Err(bad("longer than any"));
    }
    *left -= need;
    let mut bytes = vec![0u8; n as usize];
    input.read_exact(&mut bytes).map_err(|e| bad(&format!("reading: {e}")))?;
    let mut sum = [0u8; 32];
    input.read_exact(&mut sum).map_err(|e| bad(&format!("reading: {e}")))?;
    if Sha256::digest(&bytes).as_slice() != sum {
        return Err(bad("damaged (its checksum does not match)"));
    }
    Ok(bytes)
}

/// One circuit's data, decoded whole: trailing bytes are refused.
fn decode(bytes: &[u8], which: &str) -> Result<CircuitData<F, Config, D>> {
    let bad = |why: &str| AggError::ProverData(format!("the {which} circuit: {why}"));
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut buf = Buffer::new(bytes);
        let data = buf.read_circuit_data::<F, Config, D>(&RollupGateSerializer, &RollupGeneratorSerializer)?;
        if buf.pos() != bytes.len() {
            return Err(IoError);
        }
        Ok(data)
    }))
    .map_err(|_| bad("the decoder panicked"))?
    .map_err(|_| bad("does not decode"))
}

fn u32_of(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| AggError::ProverData(format!("{n} does not fit the file's u32 field")))
}
