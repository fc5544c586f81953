//! The backend trait: a few batch kernels over Goldilocks, and the derived operations of plonky2's
//! commitment step (coset LDE in plonky2's layout, Merkle tree in plonky2's exact digest layout)
//! as default methods.

use std::borrow::Cow;

use plonky2::field::extension::FieldExtension;
use plonky2::field::types::{Field, Field64};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::merkle_tree::{MerkleCap, MerkleTree};
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::circuit_data::CommonCircuitData;
use rayon::prelude::*;

use crate::commit::Commitment;
use crate::error::{BackendError, Result};
use crate::layout::{digest_position, merkle_proof, reverse_bits, tree_rows};
use crate::quotient::QuotientInputs;
use crate::transcript::{RATE, WIDTH};
use crate::{F, FE};

/// `values` owned: taken where it is, copied in parallel where it is borrowed (a fresh buffer's
/// page faults are most of a copy's cost, and a parallel copy takes them on every core).
pub fn owned(values: Cow<'_, [F]>) -> Vec<F> {
    match values {
        Cow::Owned(v) => v,
        Cow::Borrowed(s) => s.par_iter().copied().collect(),
    }
}

/// Checks that `len` elements are whole polynomials of `n`, a power of two.
pub(crate) fn check_polynomials(len: usize, n: usize) -> Result<()> {
    if n == 0 || !n.is_power_of_two() || !len.is_multiple_of(n) {
        return Err(BackendError::Shape(format!("{len} elements in polynomials of {n}")));
    }
    Ok(())
}

/// The number of leaves in `len` elements of rows of `width`, if they make a Merkle tree with a
/// cap of height `cap_height`: a power of two, at least `2^cap_height`.
pub(crate) fn tree_leaves(len: usize, width: usize, cap_height: usize) -> Result<usize> {
    if width == 0 || !len.is_multiple_of(width) {
        return Err(BackendError::Shape(format!("{len} elements in rows of {width}")));
    }
    let leaves = len / width;
    if !leaves.is_power_of_two() || (1 << cap_height) > leaves {
        return Err(BackendError::Shape(format!("{leaves} leaves for a cap of height {cap_height}")));
    }
    Ok(leaves)
}

/// Checks a proof-of-work search: the witness goes into an input slot, every candidate is a
/// canonical field element.
pub(crate) fn check_grind(slot: usize, start: u64, count: u64) -> Result<()> {
    if slot >= RATE || start.checked_add(count).is_none_or(|end| end > F::ORDER) {
        return Err(BackendError::Shape(format!("a proof-of-work search of {count} from {start} at slot {slot}")));
    }
    Ok(())
}

/// A Poseidon digest as four raw field elements.
pub type Digest = HashOut<F>;

/// Bytes a device backend copied each way ([`Backend::transfers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host to device.
    pub to_device: u64,
    /// Device to host.
    pub from_device: u64,
}

impl Transfers {
    /// What was moved between `earlier` and `self`.
    pub fn since(self, earlier: Transfers) -> Transfers {
        Transfers {
            to_device: self.to_device.saturating_sub(earlier.to_device),
            from_device: self.from_device.saturating_sub(earlier.from_device),
        }
    }
}

/// A Merkle tree of plonky2's, over rows of field elements.
pub type Tree = MerkleTree<F, PoseidonHash>;

/// Where a commitment's leaves and digests go ([`Backend::commit_tree`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// Into the returned tree, as plonky2 keeps them.
    Host,
    /// Kept where the backend made them, if it keeps trees: a device backend returns the tree
    /// with its cap only (no leaves, no digests), reads rows and Merkle paths for the caller
    /// ([`Backend::leaf_rows`], [`Backend::merkle_paths`]) and frees them at
    /// [`Backend::release`], which the caller must call ([`crate::commit::Held`] does on drop).
    /// A batch proof's wire leaves are 283 MB and their digests 17 MB, and all the proof reads
    /// of them on the host is FRI's 28 query rows and paths. The rayon backend keeps the leaves
    /// as the LDE's columns, with the digests on the host, and reads the quotient's inputs from
    /// them ([`crate::cpu`]).
    Kept,
}

/// The shape of a commitment's leaves: with the cap, what names a tree whose leaves a backend
/// kept ([`Leaves::Kept`]), since such a tree carries neither its leaves nor its digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Leaves (rows of the LDE).
    pub rows: usize,
    /// Elements per leaf (polynomials committed).
    pub width: usize,
}

/// `tree`'s leaves on the host, checked to be `shape.rows` rows of `shape.width`.
pub fn host_leaves(tree: &Tree, shape: Shape) -> Result<&[Vec<F>]> {
    if tree.leaves.len() != shape.rows {
        return Err(BackendError::Shape(format!(
            "{} leaves on the host of a tree of {} rows: its leaves were kept by a backend that no longer holds them",
            tree.leaves.len(),
            shape.rows
        )));
    }
    match tree.leaves.iter().find(|l| l.len() != shape.width) {
        Some(leaf) => Err(BackendError::Shape(format!("a leaf of {} elements, not {}", leaf.len(), shape.width))),
        None => Ok(&tree.leaves),
    }
}

/// Rows `rows` of `tree`'s leaves from the host's copy: [`Backend::leaf_rows`] for leaves on
/// the host.
pub fn host_leaf_rows(tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
    let leaves = host_leaves(tree, shape)?;
    rows.iter()
        .map(|&r| {
            leaves
                .get(r)
                .cloned()
                .ok_or_else(|| BackendError::Shape(format!("row {r} of a tree of {} leaves", leaves.len())))
        })
        .collect()
}

/// The Merkle paths of leaves `rows` from the host's digests: [`Backend::merkle_paths`] for a
/// tree whose digests are on the host.
pub fn host_merkle_paths(tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
    if tree_rows(tree) != shape.rows {
        return Err(BackendError::Shape(format!(
            "{} digests on the host under a cap of {} for {} rows: its digests were kept by a backend that no longer holds them",
            tree.digests.len(),
            tree.cap.0.len(),
            shape.rows
        )));
    }
    rows.iter().map(|&r| merkle_proof(tree, r)).collect()
}

/// A commitment's polynomials' coefficients on the host, one slice each (`2^degree_log` long),
/// or [`BackendError::Shape`] where a backend kept them ([`Backend::commit_values_tree`] with
/// [`Leaves::Kept`] leaves every polynomial's coefficients empty on the host).
pub fn host_coeffs(c: &Commitment) -> Result<Vec<&[F]>> {
    let n = 1usize << c.degree_log;
    match c.polynomials.iter().find(|p| p.len() != n) {
        Some(p) => Err(BackendError::Shape(format!(
            "{} coefficients on the host of a polynomial of {n}: they were kept by a backend that does not hold them",
            p.len()
        ))),
        None => Ok(c.polynomials.iter().map(|p| p.coeffs.as_slice()).collect()),
    }
}

/// Each polynomial's value at each of `points` (`out[k][i]`: polynomial `i` at `points[k]`):
/// the dot product of its coefficients with the point's powers, computed once per point, a
/// base-by-extension product per coefficient. [`Backend::evaluate`] on the host.
pub fn evaluate_coeffs(polys: &[&[F]], points: &[FE]) -> Vec<Vec<FE>> {
    let len = polys.iter().map(|p| p.len()).max().unwrap_or(0);
    points
        .iter()
        .map(|&x| {
            let powers: Vec<FE> = x.powers().take(len).collect();
            polys
                .par_iter()
                .map(|p| {
                    p.iter().zip(&powers).fold(FE::ZERO, |acc, (&c, &x)| acc + FieldExtension::<2>::scalar_mul(&x, c))
                })
                .collect()
        })
        .collect()
}

/// `Σ_k powers[k]·polys[indices[k]]`, coefficient by coefficient, `n` coefficients: each block
/// of 2^10 coefficients sums its column of base-by-extension products, blocks in parallel.
/// [`Backend::combine`] on the host.
pub fn combine_coeffs(polys: &[&[F]], indices: &[usize], powers: &[FE], n: usize) -> Result<Vec<FE>> {
    const BLOCK: usize = 1 << 10;
    check_combination(polys.len(), indices, powers)?;
    let mut out = vec![FE::ZERO; n];
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, block)| {
        let start = b * BLOCK;
        for (&i, &power) in indices.iter().zip(powers) {
            let coeffs = polys[i].get(start..).unwrap_or(&[]);
            for (o, &c) in block.iter_mut().zip(coeffs) {
                *o += FieldExtension::<2>::scalar_mul(&power, c);
            }
        }
    });
    Ok(out)
}

/// A combination names polynomials of the commitment, one power each.
pub(crate) fn check_combination(width: usize, indices: &[usize], powers: &[FE]) -> Result<()> {
    if indices.len() != powers.len() {
        return Err(BackendError::Shape(format!("{} polynomials and {} powers", indices.len(), powers.len())));
    }
    match indices.iter().find(|&&i| i >= width) {
        Some(i) => Err(BackendError::Shape(format!("polynomial {i} of a commitment to {width}"))),
        None => Ok(()),
    }
}

/// [`Backend::commit_tree`] with the leaves on the host, from `backend`'s
/// [`Backend::coset_lde_leaves`] and [`Backend::merkle_tree_of_leaves`]: the trait's default,
/// and what a backend that overrides it for kept leaves does for [`Leaves::Host`].
pub fn commit_tree_on_host<B: Backend + ?Sized>(
    backend: &B,
    coeffs: &[F],
    n: usize,
    rate_bits: usize,
    cap_height: usize,
) -> Result<Tree> {
    let leaves = backend.coset_lde_leaves(coeffs, n, rate_bits)?;
    let (digests, cap) = backend.merkle_tree_of_leaves(&leaves, cap_height)?;
    Ok(MerkleTree { leaves, digests, cap: MerkleCap(cap) })
}

/// A proving backend. Kernels write into caller-allocated buffers; polynomials are stored one
/// after another (`batch × n` elements, polynomial `p` at `[p·n, (p+1)·n)`).
pub trait Backend: Send + Sync {
    /// Short name for logs and reports.
    fn name(&self) -> &'static str;

    /// For each polynomial, in place: coefficients `c` in natural order become the values
    /// `v_i = Σ_j c_j·(shift·ω^i)^j`, `ω` = `F::primitive_root_of_unity(log2 n)`, natural order.
    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()>;

    /// `out[r]` = plonky2's `hash_or_noop` of row `r` (`width` elements each).
    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()>;

    /// `out[i] = two_to_one(children[2i], children[2i+1])`.
    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()>;

    /// The most device memory this backend's buffers have taken at once since it started
    /// (sampled while each kernel's buffers are allocated); `None` for host backends.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether `in_flight` proofs at once of any of `circuits` fit in the device's free memory
    /// (a [`BackendError::DeviceMemory`] that says how many do if not), checked before the first
    /// proof; host backends always fit.
    fn check_memory(&self, circuits: &[&CommonCircuitData<F, 2>], in_flight: usize) -> Result<()> {
        let _ = (circuits, in_flight);
        Ok(())
    }

    /// How many streams the device's work goes to; `None` for host backends.
    fn device_streams(&self) -> Option<usize> {
        None
    }

    /// Bytes copied to and from the device since the backend started; `None` for host
    /// backends. The difference across a proof is what that proof moved.
    fn transfers(&self) -> Option<Transfers> {
        None
    }

    /// The quotient step's vanishing terms combined by α and divided by `Z_H` at every point of
    /// the quotient coset: `num_challenges × size` values, challenge by challenge (see
    /// [`crate::quotient`]). The default runs plonky2's own gates on the CPU.
    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        q.values_on_cpu()
    }

    /// The quotient polynomials' coefficients, challenge by challenge (`num_challenges × size`):
    /// [`Backend::quotient_values`] interpolated on their coset, `F::coset_shift()·⟨ω⟩`. The
    /// default is [`crate::quotient::coeffs_from_values`] (the values, then
    /// [`Backend::intt_batch`] and the shift undone on the host); a device backend keeps the
    /// values on the device until they are coefficients.
    fn quotient_coeffs(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        crate::quotient::coeffs_from_values(self, q)
    }

    /// The search of FRI's proof of work: the smallest candidate in `start .. start + count`
    /// for which [`pow_response`](crate::transcript::pow_response) (`state` permuted with the
    /// candidate written at `slot`) has at least `min_leading_zeros` leading zeros in its
    /// canonical 64-bit form; `None` if none does. Every candidate is below the field's order.
    /// The default searches on the CPU, eight candidates per permutation
    /// ([`crate::poseidon_x8::grind`]).
    fn grind(
        &self,
        state: &[F; WIDTH],
        slot: usize,
        min_leading_zeros: u32,
        start: u64,
        count: u64,
    ) -> Result<Option<u64>> {
        check_grind(slot, start, count)?;
        Ok(crate::poseidon_x8::grind(state, slot, min_leading_zeros, start, count))
    }

    /// For each polynomial, in place: values at `ω^i` (natural order) become the coefficients of
    /// the polynomial interpolating them, as plonky2's `ifft`. Derived from the forward kernel:
    /// the DFT of the values, read at `-j`, divided by `n`.
    fn intt_batch(&self, data: &mut [F], n: usize) -> Result<()> {
        self.coset_ntt_batch(data, n, F::ONE)?;
        let n_inv = F::inverse_2exp(n.trailing_zeros() as usize);
        data.par_chunks_mut(n).for_each(|p| {
            p[1..].reverse();
            p.iter_mut().for_each(|x| *x *= n_inv);
        });
        Ok(())
    }

    /// Each polynomial's values on the coset `shift·⟨ω_m⟩`, `m = n·2^rate_bits`, natural order:
    /// the coefficients padded with zeros, then [`Backend::coset_ntt_batch`]. Returns
    /// `batch × m` elements. Backends may skip the known zeros.
    fn coset_lde_batch(&self, coeffs: &[F], n: usize, rate_bits: usize, shift: F) -> Result<Vec<F>> {
        check_polynomials(coeffs.len(), n)?;
        let m = n << rate_bits;
        let mut lde = vec![F::ZERO; coeffs.len() << rate_bits];
        lde.par_chunks_mut(m).zip(coeffs.par_chunks(n)).for_each(|(l, c)| l[..n].copy_from_slice(c));
        self.coset_ntt_batch(&mut lde, m, shift)?;
        Ok(lde)
    }

    /// The values plonky2's `PolynomialBatch::from_coeffs` commits to (without blinding): each
    /// polynomial's degree-`n·2^rate_bits` coset LDE on `F::coset_shift()`, transposed into rows
    /// and the rows put in bit-reversed order. Returns `rows × batch` elements, row-major.
    fn coset_lde_rows(&self, coeffs: &[F], n: usize, rate_bits: usize) -> Result<Vec<F>> {
        let lde = self.coset_lde_batch(coeffs, n, rate_bits, F::coset_shift())?;
        let batch = coeffs.len() / n;
        let m = n << rate_bits;
        let log_m = m.trailing_zeros() as usize;
        let mut rows = vec![F::ZERO; batch * m];
        rows.par_chunks_mut(batch).enumerate().for_each(|(r, row)| {
            let src = reverse_bits(r, log_m);
            for (p, x) in row.iter_mut().enumerate() {
                *x = lde[p * m + src];
            }
        });
        Ok(rows)
    }

    /// The leaves plonky2's commitment stores (one `Vec` per row), gathered straight from the
    /// LDE: [`Backend::coset_lde_rows`] without the flat copy in between.
    fn coset_lde_leaves(&self, coeffs: &[F], n: usize, rate_bits: usize) -> Result<Vec<Vec<F>>> {
        let lde = self.coset_lde_batch(coeffs, n, rate_bits, F::coset_shift())?;
        let batch = coeffs.len() / n;
        let m = n << rate_bits;
        let log_m = m.trailing_zeros() as usize;
        // Rows in natural order, so that neighbouring rows read neighbouring elements of each
        // polynomial (a bit-reversed gather would use one element of every cache line it loads),
        // then the rows themselves, only pointers, put in bit-reversed order.
        let mut leaves: Vec<Vec<F>> =
            (0..m).into_par_iter().map(|r| (0..batch).map(|p| lde[p * m + r]).collect()).collect();
        drop(lde);
        for r in 0..m {
            let s = reverse_bits(r, log_m);
            if r < s {
                leaves.swap(r, s);
            }
        }
        Ok(leaves)
    }

    /// The whole commitment step of plonky2's `PolynomialBatch::from_coeffs` (unblinded): the
    /// coset LDE of `coeffs` (polynomials of `n`, one after another) at rate `2^-rate_bits`,
    /// its rows as leaves, and the Merkle tree over them; the leaves where `leaves` says. The
    /// default composes [`Backend::coset_lde_leaves`] and [`Backend::merkle_tree_of_leaves`],
    /// leaves on the host; a device backend runs it in one pass without the host in between.
    fn commit_tree(
        &self,
        coeffs: &[F],
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        _leaves: Leaves,
    ) -> Result<Tree> {
        commit_tree_on_host(self, coeffs, n, rate_bits, cap_height)
    }

    /// plonky2's `PolynomialBatch::from_values` (unblinded): the coefficients of the polynomials
    /// interpolating `values` on the subgroup of order `n` (one after another), and the
    /// commitment to them as [`Backend::commit_tree`] makes it. The default is
    /// [`Backend::intt_batch`] then [`Backend::commit_tree`], in place where `values` is owned
    /// and on a parallel copy where it is borrowed. A device backend runs both where the values
    /// are, after one upload from wherever they lie (the prover lends the wire columns, which it
    /// reads again after the commitment, so a device backend copies nothing on the host), and
    /// with [`Leaves::Kept`] may keep the coefficients there too and return none: then
    /// [`Backend::evaluate`], [`Backend::combine`] and [`Backend::read_coeffs`] read them until
    /// [`Backend::release`].
    fn commit_values_tree(
        &self,
        values: Cow<'_, [F]>,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        leaves: Leaves,
    ) -> Result<(Vec<F>, Tree)> {
        check_polynomials(values.len(), n)?;
        let mut values = owned(values);
        self.intt_batch(&mut values, n)?;
        let tree = self.commit_tree(&values, n, rate_bits, cap_height, leaves)?;
        Ok((values, tree))
    }

    /// The values of `c`'s polynomials at each of `points` (`out[k][i]`: polynomial `i` at
    /// `points[k]`): the openings at ζ and gζ. From the host's coefficients if `c` has them, else
    /// from the copy this backend kept ([`Backend::commit_values_tree`]); the default reads the
    /// host's ([`evaluate_coeffs`]).
    fn evaluate(&self, c: &Commitment, points: &[FE]) -> Result<Vec<Vec<FE>>> {
        Ok(evaluate_coeffs(&host_coeffs(c)?, points))
    }

    /// `Σ_k powers[k]·p_{indices[k]}` over `c`'s polynomials, coefficient by coefficient
    /// (`2^degree_log` extension coefficients): FRI's combination of the polynomials it opens,
    /// one commitment's share. Sources as [`Backend::evaluate`]; the default is
    /// [`combine_coeffs`] on the host's.
    fn combine(&self, c: &Commitment, indices: &[usize], powers: &[FE]) -> Result<Vec<FE>> {
        combine_coeffs(&host_coeffs(c)?, indices, powers, 1 << c.degree_log)
    }

    /// `c`'s coefficients, one polynomial after another: the host's, or the copy this backend
    /// kept, brought back (for checks: [`crate::dual::DualBackend`] compares them).
    fn read_coeffs(&self, c: &Commitment) -> Result<Vec<F>> {
        Ok(host_coeffs(c)?.concat())
    }

    /// Rows `rows` (any order, repeats allowed) of the leaves of `tree`, a commitment's tree of
    /// this shape: from the host's copy if it has one, else from the copy this backend kept
    /// ([`Leaves::Kept`]). An index past the tree, or leaves neither here nor there, is
    /// [`BackendError::Shape`].
    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        host_leaf_rows(tree, shape, rows)
    }

    /// plonky2's `MerkleTree::prove` of each of the leaves `rows` of `tree` (a commitment's tree
    /// of this shape): from the host's digests if it has them, else from the ones this backend
    /// kept. Errors as [`Backend::leaf_rows`].
    fn merkle_paths(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
        host_merkle_paths(tree, shape, rows)
    }

    /// Nothing will read the leaves or digests of `tree` (of this shape) through this backend
    /// again: a device backend frees what it kept or cached (see [`crate::resident`]). The
    /// default holds nothing.
    fn release(&self, _tree: &Tree, _shape: Shape) {}

    /// [`Backend::merkle_tree`] over leaves held as one `Vec` per row.
    fn merkle_tree_of_leaves(&self, leaves: &[Vec<F>], cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let width = leaves.first().map_or(0, Vec::len);
        let flat: Vec<F> = leaves.iter().flatten().copied().collect();
        self.merkle_tree(&flat, width, cap_height)
    }

    /// plonky2's `MerkleTree::new(rows, cap_height)`: the digests in its recursive layout and
    /// the cap. `rows` holds `leaves × width` elements.
    fn merkle_tree(&self, rows: &[F], width: usize, cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let leaves = tree_leaves(rows.len(), width, cap_height)?;
        let mut level = vec![Digest::default(); leaves];
        self.hash_rows(rows, width, &mut level)?;
        self.tree_above(level, cap_height)
    }

    /// The digests and cap above the leaves' digests `level`, in plonky2's layout.
    fn tree_above(&self, mut level: Vec<Digest>, cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let leaves = level.len();
        if !leaves.is_power_of_two() || (1 << cap_height) > leaves {
            return Err(BackendError::Shape(format!("{leaves} leaves for a cap of height {cap_height}")));
        }
        let log_leaves = leaves.trailing_zeros() as usize;
        let sub_height = log_leaves - cap_height;
        let per_subtree = 2 * ((1usize << sub_height) - 1);
        let mut digests = vec![Digest::default(); per_subtree << cap_height];
        for h in 0..sub_height {
            for (i, d) in level.iter().enumerate() {
                let (tree, j) = (i >> (sub_height - h), i & ((1 << (sub_height - h)) - 1));
                digests[tree * per_subtree + digest_position(sub_height, h, j)] = *d;
            }
            let mut next = vec![Digest::default(); level.len() / 2];
            self.hash_pairs(&level, &mut next)?;
            level = next;
        }
        Ok((digests, level))
    }
}
