//! Runs every kernel on two backends and insists on equal outputs (risc0's `DualHal`): the way to
//! check the CUDA backend against the CPU inside whole computations.

use std::borrow::Cow;

use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::plonk::circuit_data::CommonCircuitData;

use crate::backend::{host_merkle_paths, Backend, Digest, Leaves, Shape, Transfers, Tree};
use crate::commit::Commitment;
use crate::error::{BackendError, Result};
use crate::quotient::QuotientInputs;
use crate::transcript::WIDTH;
use crate::{F, FE};

/// Two backends in lockstep; results come from the first.
pub struct DualBackend<A, B> {
    /// The backend whose results are returned.
    pub first: A,
    /// The backend checked against it.
    pub second: B,
}

fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Where two Merkle trees (digests, cap) first differ, if they do.
fn tree_difference(a: (&[Digest], &[Digest]), b: (&[Digest], &[Digest])) -> Option<String> {
    if a.0.len() != b.0.len() {
        Some(format!("{} digests against {}", a.0.len(), b.0.len()))
    } else if let Some(i) = first_difference(a.0, b.0) {
        Some(format!("digest {i} of {}", a.0.len()))
    } else if a.1 != b.1 {
        Some("the cap".to_string())
    } else {
        None
    }
}

impl<A: Backend, B: Backend> DualBackend<A, B> {
    /// Where the second's commitment `other` (of `shape`, its leaves and Merkle paths read back
    /// whole wherever it keeps them) first differs from the first's `tree` (all on the host).
    fn tree_difference_with(&self, tree: &Tree, other: &Tree, shape: Shape) -> Option<String> {
        let all: Vec<usize> = (0..tree.leaves.len()).collect();
        let other_leaves = match self.second.leaf_rows(other, shape, &all) {
            Err(e) => return Some(format!("its leaves do not read back: {e}")),
            Ok(l) => l,
        };
        if let Some(r) = first_difference(&tree.leaves, &other_leaves) {
            return Some(format!("leaf row {r} of {}", tree.leaves.len()));
        }
        if !other.digests.is_empty() {
            return tree_difference((&tree.digests, &tree.cap.0), (&other.digests, &other.cap.0));
        }
        if tree.cap != other.cap {
            return Some("the cap".to_string());
        }
        // Digests kept by the second: every digest but the cap's is a sibling on some path.
        match (host_merkle_paths(tree, shape, &all), self.second.merkle_paths(other, shape, &all)) {
            (Ok(ours), Ok(theirs)) => first_difference(&ours, &theirs).map(|r| format!("the Merkle path of leaf {r}")),
            (Err(e), _) | (_, Err(e)) => Some(format!("the Merkle paths do not read back: {e}")),
        }
    }

    /// `read` from the first backend, and from the second's own copy of `tree` where it kept one
    /// (else from what the first reads), compared.
    fn read_both<T: PartialEq>(
        &self,
        kernel: &'static str,
        tree: &Tree,
        rows: &[usize],
        read: impl Fn(&dyn Backend, &Tree) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let out = read(&self.first, tree)?;
        let stripped = Tree { leaves: Vec::new(), digests: Vec::new(), cap: tree.cap.clone() };
        let other = match read(&self.second, &stripped) {
            Err(BackendError::Shape(_)) => read(&self.second, tree)?,
            other => other?,
        };
        match first_difference(&out, &other) {
            None if out.len() == other.len() => Ok(out),
            None => {
                Err(BackendError::Mismatch { kernel, detail: format!("{} rows against {}", out.len(), other.len()) })
            }
            Some(i) => Err(BackendError::Mismatch { kernel, detail: format!("row {}", rows[i]) }),
        }
    }
}

impl<A: Backend, B: Backend> Backend for DualBackend<A, B> {
    fn name(&self) -> &'static str {
        "dual"
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.first.peak_device_bytes().max(self.second.peak_device_bytes())
    }

    fn device_streams(&self) -> Option<usize> {
        self.first.device_streams().max(self.second.device_streams())
    }

    /// Both backends' devices hold them.
    fn check_memory(&self, circuits: &[&CommonCircuitData<F, 2>], in_flight: usize) -> Result<()> {
        self.first.check_memory(circuits, in_flight)?;
        self.second.check_memory(circuits, in_flight)
    }

    /// The two backends' copies together.
    fn transfers(&self) -> Option<Transfers> {
        match (self.first.transfers(), self.second.transfers()) {
            (Some(a), Some(b)) => {
                Some(Transfers { to_device: a.to_device + b.to_device, from_device: a.from_device + b.from_device })
            }
            (a, b) => a.or(b),
        }
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        let mut other = data.to_vec();
        self.first.coset_ntt_batch(data, n, shift)?;
        self.second.coset_ntt_batch(&mut other, n, shift)?;
        match first_difference(data, &other) {
            None => Ok(()),
            Some(i) => {
                Err(BackendError::Mismatch { kernel: "coset_ntt_batch", detail: format!("element {i} of n = {n}") })
            }
        }
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        let mut other = vec![Digest::default(); out.len()];
        self.first.hash_rows(rows, width, out)?;
        self.second.hash_rows(rows, width, &mut other)?;
        match first_difference(out, &other) {
            None => Ok(()),
            Some(i) => Err(BackendError::Mismatch { kernel: "hash_rows", detail: format!("row {i} of width {width}") }),
        }
    }

    fn release(&self, tree: &Tree, shape: Shape) {
        self.first.release(tree, shape);
        self.second.release(tree, shape);
    }

    /// Each backend's rows: the first's from its copy (the host's, if `tree` has one), the
    /// second's from its own copy of the commitment where it kept one.
    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        self.read_both("leaf_rows", tree, rows, |b, t| b.leaf_rows(t, shape, rows))
    }

    /// Each backend's Merkle paths, as [`DualBackend::leaf_rows`] reads rows.
    fn merkle_paths(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
        self.read_both("merkle_paths", tree, rows, |b, t| b.merkle_paths(t, shape, rows))
    }

    fn merkle_tree(&self, rows: &[F], width: usize, cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let (digests, cap) = self.first.merkle_tree(rows, width, cap_height)?;
        let (other_digests, other_cap) = self.second.merkle_tree(rows, width, cap_height)?;
        match tree_difference((&digests, &cap), (&other_digests, &other_cap)) {
            None => Ok((digests, cap)),
            Some(detail) => Err(BackendError::Mismatch { kernel: "merkle_tree", detail }),
        }
    }

    /// Both commitments, compared leaf by leaf (read back whole from a backend that kept them),
    /// then digest by digest. The first's tree is returned, its leaves on the host; the second
    /// keeps its copy as `leaves` says, until [`Backend::release`] (at once if they differ).
    fn commit_tree(&self, coeffs: &[F], n: usize, rate_bits: usize, cap_height: usize, leaves: Leaves) -> Result<Tree> {
        let tree = self.first.commit_tree(coeffs, n, rate_bits, cap_height, Leaves::Host)?;
        let other = self.second.commit_tree(coeffs, n, rate_bits, cap_height, leaves)?;
        let shape = Shape { rows: n << rate_bits, width: coeffs.len() / n };
        match self.tree_difference_with(&tree, &other, shape) {
            None => Ok(tree),
            Some(detail) => {
                self.second.release(&other, shape);
                Err(BackendError::Mismatch { kernel: "commit_tree", detail })
            }
        }
    }

    /// Both backends' coefficients, compared (read back from the second where it kept them),
    /// then their commitments as in [`DualBackend::commit_tree`].
    fn commit_values_tree(
        &self,
        values: Cow<'_, [F]>,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        leaves: Leaves,
    ) -> Result<(Vec<F>, Tree)> {
        let (coeffs, tree) =
            self.first.commit_values_tree(Cow::Borrowed(&values), n, rate_bits, cap_height, Leaves::Host)?;
        let (other_coeffs, other) = self.second.commit_values_tree(values, n, rate_bits, cap_height, leaves)?;
        let shape = Shape { rows: n << rate_bits, width: coeffs.len() / n };
        let other_coeffs = if other_coeffs.is_empty() && leaves == Leaves::Kept {
            let kept = Commitment {
                polynomials: vec![PolynomialCoeffs::new(Vec::new()); shape.width],
                merkle_tree: Tree { leaves: Vec::new(), digests: Vec::new(), cap: other.cap.clone() },
                degree_log: n.trailing_zeros() as usize,
                rate_bits,
                blinding: false,
            };
            match self.second.read_coeffs(&kept) {
                Ok(c) => c,
                Err(e) => {
                    self.second.release(&other, shape);
                    let detail = format!("the kept coefficients do not read back: {e}");
                    return Err(BackendError::Mismatch { kernel: "commit_values_tree", detail });
                }
            }
        } else {
            other_coeffs
        };
        let detail = if coeffs.len() != other_coeffs.len() {
            Some(format!("{} coefficients against {}", coeffs.len(), other_coeffs.len()))
        } else if let Some(i) = first_difference(&coeffs, &other_coeffs) {
            Some(format!("coefficient {} of polynomial {}", i % n, i / n))
        } else {
            self.tree_difference_with(&tree, &other, shape)
        };
        match detail {
            None => Ok((coeffs, tree)),
            Some(detail) => {
                self.second.release(&other, shape);
                Err(BackendError::Mismatch { kernel: "commit_values_tree", detail })
            }
        }
    }

    /// Each backend's values: the first's from the host's coefficients, the second's from its
    /// own copy where it kept one.
    fn evaluate(&self, c: &Commitment, points: &[FE]) -> Result<Vec<Vec<FE>>> {
        let out = self.first.evaluate(c, points)?;
        let other = self.second.evaluate(c, points)?;
        let detail = if out.len() != other.len() {
            Some(format!("{} points against {}", out.len(), other.len()))
        } else {
            out.iter().zip(&other).enumerate().find_map(|(k, (a, b))| match first_difference(a, b) {
                None if a.len() == b.len() => None,
                None => Some(format!("{} values against {} at point {k}", a.len(), b.len())),
                Some(i) => Some(format!("polynomial {i} at point {k}")),
            })
        };
        match detail {
            None => Ok(out),
            Some(detail) => Err(BackendError::Mismatch { kernel: "evaluate", detail }),
        }
    }

    /// Each backend's combination, sourced as in [`DualBackend::evaluate`].
    fn combine(&self, c: &Commitment, indices: &[usize], powers: &[FE]) -> Result<Vec<FE>> {
        let out = self.first.combine(c, indices, powers)?;
        let other = self.second.combine(c, indices, powers)?;
        match first_difference(&out, &other) {
            None if out.len() == other.len() => Ok(out),
            None => Err(BackendError::Mismatch {
                kernel: "combine",
                detail: format!("{} coefficients against {}", out.len(), other.len()),
            }),
            Some(i) => Err(BackendError::Mismatch { kernel: "combine", detail: format!("coefficient {i}") }),
        }
    }

    fn read_coeffs(&self, c: &Commitment) -> Result<Vec<F>> {
        self.first.read_coeffs(c)
    }

    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let out = self.first.quotient_values(q)?;
        let other = self.second.quotient_values(q)?;
        match first_difference(&out, &other) {
            None if out.len() == other.len() => Ok(out),
            None => Err(BackendError::Mismatch {
                kernel: "quotient_values",
                detail: format!("{} values against {}", out.len(), other.len()),
            }),
            Some(i) => {
                let size = q.size();
                let detail = format!("challenge {} at point {} of {size}", i / size, i % size);
                Err(BackendError::Mismatch { kernel: "quotient_values", detail })
            }
        }
    }

    /// The values first (compared point by point, so a difference is named where it is), then
    /// each backend's coefficients.
    fn quotient_coeffs(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        self.quotient_values(q)?;
        let out = self.first.quotient_coeffs(q)?;
        let other = self.second.quotient_coeffs(q)?;
        let size = q.size();
        match first_difference(&out, &other) {
            None if out.len() == other.len() => Ok(out),
            None => Err(BackendError::Mismatch {
                kernel: "quotient_coeffs",
                detail: format!("{} coefficients against {}", out.len(), other.len()),
            }),
            Some(i) => Err(BackendError::Mismatch {
                kernel: "quotient_coeffs",
                detail: format!("challenge {} coefficient {} of {size}", i / size, i % size),
            }),
        }
    }

    fn grind(
        &self,
        state: &[F; WIDTH],
        slot: usize,
        min_leading_zeros: u32,
        start: u64,
        count: u64,
    ) -> Result<Option<u64>> {
        let found = self.first.grind(state, slot, min_leading_zeros, start, count)?;
        let other = self.second.grind(state, slot, min_leading_zeros, start, count)?;
        if found != other {
            let detail = format!("{found:?} against {other:?} in {count} candidates from {start}");
            return Err(BackendError::Mismatch { kernel: "grind", detail });
        }
        Ok(found)
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        let mut other = vec![Digest::default(); out.len()];
        self.first.hash_pairs(children, out)?;
        self.second.hash_pairs(children, &mut other)?;
        match first_difference(out, &other) {
            None => Ok(()),
            Some(i) => Err(BackendError::Mismatch { kernel: "hash_pairs", detail: format!("parent {i}") }),
        }
    }
}
