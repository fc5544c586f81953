//! How much device memory the CUDA backend's proofs take, from a circuit's shape and the
//! backend's own allocations: what a prover checks before it takes work, so that a process
//! started with more proofs in flight than its device holds says so at once, instead of failing
//! its first jobs with an out-of-memory error (which ends the process as a device fault, and
//! again after every restart with the same flags).
//!
//! A proof's buffers, in elements of 8 bytes, for a trace of `n` rows and an LDE of `m = n << rate`
//! rows (`CudaBackend::commit_on_device` and its callers):
//! - committing `x` polynomials: their `x·n` coefficients, the zero-padded `x·m`, and the
//!   transformed `x·m` (the padded copy is freed before the leaves take its place, and the tree's
//!   levels are smaller): `2·x·m + x·n` at its peak;
//! - a kept commitment (wires, Z, the quotient chunks, until FRI is done): its `x·m` leaves, `x·n`
//!   coefficients and about `8·m` words of digests;
//! - the quotient: the kernel's `challenges × size` values, the transform beside them, then the
//!   coefficients beside the transform: `2 · challenges · size`;
//! - FRI: the combined polynomial's LDE (two components of `m`, and its transform): `4·m`.
//!
//! The steps in order, each over what the earlier ones keep: the wires' commitment (the peak of
//! every circuit of the standard recursion config: 135 wires), Z's, the quotient, the quotient
//! chunks' commitment, FRI. Beside them, for as long as the backend lives: each circuit's
//! constants and sigmas (their leaves, cached for the quotient, and their coefficients, for the
//! openings) and, per trace shape, the NTTs' tables of powers and the quotient coset's points.

use plonky2::plonk::circuit_data::CommonCircuitData;

use crate::error::{BackendError, Result};
use crate::F;

/// Bytes of a field element on the device.
const WORD: u64 = 8;

/// What the allocator may add to each buffer (the driver rounds large allocations up to its
/// pages of 2 MiB; a proof holds about a dozen buffers at once), per proof in flight: added by
/// [`need`] to what the proofs allocate.
pub const SLACK_PER_PROOF: u64 = 32 << 20;

/// A proof's small buffers, beside the steps' large ones: the quotient kernel's arguments, the
/// openings' sums, FRI's query rows and paths, the proof of work's.
const SMALL_BUFFERS: u64 = 1 << 20;

/// Device memory of proofs of one circuit on the CUDA backend, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// What one proof in flight holds at its peak, beyond what stays resident.
    pub per_proof: u64,
    /// What stays on the device for every later proof of the circuit: its constants' and sigmas'
    /// leaves and coefficients.
    pub resident: u64,
    /// The tables of the circuit's trace shape (powers for the NTTs, the quotient coset's
    /// points), shared with every circuit of the same shape.
    pub tables: u64,
    /// The shape the tables belong to: `(log2 n, rate bits)`.
    pub shape: (usize, usize),
}

impl Footprint {
    /// The footprint of proofs of `common`.
    pub fn of(common: &CommonCircuitData<F, 2>) -> Self {
        let rate_bits = common.config.fri_config.rate_bits;
        let n = common.degree() as u64;
        let m = n << rate_bits;
        let challenges = common.config.num_challenges as u64;
        let wires = common.config.num_wires as u64;
        let zs = challenges * (1 + common.num_partial_products) as u64;
        let chunks = challenges * common.quotient_degree_factor as u64;
        let quotient_size = n * (common.quotient_degree_factor as u64).next_power_of_two();
        let committing = |x: u64| 2 * x * m + x * n;
        let kept = |x: u64| x * m + x * n + 8 * m;
        let steps = [
            committing(wires),
            kept(wires) + committing(zs),
            kept(wires) + kept(zs) + 2 * challenges * quotient_size,
            kept(wires) + kept(zs) + committing(chunks),
            kept(wires) + kept(zs) + kept(chunks) + 4 * m,
        ];
        let per_proof = steps.into_iter().max().unwrap_or(0) * WORD + SMALL_BUFFERS;
        let constants_sigmas = (common.num_constants + common.config.num_routed_wires) as u64;
        // Powers of the coset shift and roots of unity at m and n, of the shift's inverse and of
        // one at the quotient's size, and the coset's points and L₀.
        let tables = (m + m / 2 + n + n / 2 + 2 * quotient_size + 2 * m) * WORD;
        Footprint {
            per_proof,
            resident: constants_sigmas * (m + n) * WORD,
            tables,
            shape: (common.degree_bits(), rate_bits),
        }
    }
}

/// The device memory `in_flight` proofs at once of any of `circuits` need, in bytes: each proof
/// as the largest circuit's, every circuit's resident part, each shape's tables once, and the
/// allocator's slack per proof.
pub fn need(circuits: &[Footprint], in_flight: usize) -> u64 {
    in_flight as u64 * per_proof(circuits) + resident(circuits)
}

/// What each proof in flight of any of `circuits` takes: the largest circuit's, and the
/// allocator's slack.
pub fn per_proof(circuits: &[Footprint]) -> u64 {
    circuits.iter().map(|c| c.per_proof).max().unwrap_or(0) + SLACK_PER_PROOF
}

/// What stays on the device whatever the proofs in flight: every circuit's resident part and
/// each shape's tables once.
pub fn resident(circuits: &[Footprint]) -> u64 {
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    let mut bytes = 0;
    for c in circuits {
        bytes += c.resident;
        if !shapes.contains(&c.shape) {
            shapes.push(c.shape);
            bytes += c.tables;
        }
    }
    bytes
}

/// Whether `in_flight` proofs of `circuits` fit in `free` bytes of device memory: if not, a
/// [`BackendError::DeviceMemory`] that says how many do.
pub fn check(circuits: &[Footprint], in_flight: usize, free: u64) -> Result<()> {
    let need = need(circuits, in_flight);
    if need <= free {
        return Ok(());
    }
    let fit = free.saturating_sub(resident(circuits)) / per_proof(circuits);
    Err(BackendError::DeviceMemory {
        in_flight,
        need_mib: need.div_ceil(1 << 20),
        free_mib: free >> 20,
        fit: fit as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(per_proof: u64, resident: u64, tables: u64, shape: (usize, usize)) -> Footprint {
        Footprint { per_proof, resident, tables, shape }
    }

    #[test]
    fn proofs_in_flight_take_the_largest_circuits_share_each_and_the_resident_parts_once() {
        const MIB: u64 = 1 << 20;
        let batch = shape(600 * MIB, 200 * MIB, 10 * MIB, (15, 3));
        let merge = shape(500 * MIB, 150 * MIB, 10 * MIB, (15, 3));
        let small = shape(100 * MIB, 20 * MIB, 2 * MIB, (12, 3));
        let per_proof = 600 * MIB + SLACK_PER_PROOF;
        // One shape's tables once, the other's too; every circuit's resident part.
        assert_eq!(need(&[batch, merge, small], 3), 3 * per_proof + 370 * MIB + 12 * MIB);
        assert_eq!(need(&[batch], 0), 210 * MIB);
        let circuits = [batch, merge];
        let resident = 360 * MIB;
        let exactly = need(&circuits, 4);
        assert!(check(&circuits, 4, exactly).is_ok());
        match check(&circuits, 4, exactly - 1) {
            Err(BackendError::DeviceMemory { in_flight: 4, fit: 3, need_mib, free_mib }) => {
                assert_eq!(need_mib, exactly.div_ceil(MIB));
                assert_eq!(free_mib, (exactly - 1) / MIB);
            }
            other => panic!("four do not fit where three do: {other:?}"),
        }
        // Not even one proof: the resident parts alone, or less.
        for free in [resident, resident / 2] {
            match check(&circuits, 1, free) {
                Err(BackendError::DeviceMemory { fit: 0, .. }) => {}
                other => panic!("nothing fits in {free} bytes: {other:?}"),
            }
        }
    }
}
