//! The rayon kernels against plain oracles and against plonky2 itself (LDE values, Merkle digests
//! and caps) on seeded random inputs at awkward sizes; the CUDA kernels against rayon where a
//! device is present.

use std::borrow::Cow;

use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::{Field, Field64, Sample};
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::plonk::config::PoseidonGoldilocksConfig;
use plonky2::util::timing::TimingTree;
use prover_gpu::backend::{Leaves, Shape};
use prover_gpu::naive::coset_dft;
use prover_gpu::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[macro_use]
mod rayon_kernels;
mod keeping;
mod kernels_only;
use keeping::Keeping;
use kernels_only::KernelsOnly;

type FE = <F as plonky2::field::extension::Extendable<2>>::Extension;

/// The unblinded commitment to `coeffs` (polynomials of `n`, one after another) with `tree`.
fn commitment(coeffs: &[F], n: usize, tree: backend::Tree, rate_bits: usize) -> prover_gpu::commit::Commitment {
    prover_gpu::commit::Commitment {
        polynomials: coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect(),
        merkle_tree: tree,
        degree_log: n.trailing_zeros() as usize,
        rate_bits,
        blinding: false,
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<F> {
    (0..n).map(|_| F::sample(rng)).collect()
}

#[test]
fn ntt_matches_the_definition() {
    let mut rng = StdRng::seed_from_u64(1);
    for log_n in 0..=9 {
        let n = 1 << log_n;
        for batch in [1, 3] {
            let coeffs = random(&mut rng, n * batch);
            let shift = F::sample(&mut rng);
            let mut fast = coeffs.clone();
            RayonBackend.coset_ntt_batch(&mut fast, n, shift).expect("ntt");
            for p in 0..batch {
                assert_eq!(fast[p * n..(p + 1) * n], coset_dft(&coeffs[p * n..(p + 1) * n], shift)[..], "n = {n}");
            }
        }
    }
}

/// plonky2's commitment of `batch` random polynomials of `n` coefficients.
fn plonky2_commitment(
    coeffs: &[F],
    n: usize,
    rate_bits: usize,
    cap_height: usize,
) -> PolynomialBatch<F, PoseidonGoldilocksConfig, 2> {
    let polys = coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect();
    PolynomialBatch::from_coeffs(polys, rate_bits, false, cap_height, &mut TimingTree::default(), None)
}

#[test]
fn lde_and_merkle_tree_are_bit_identical_to_plonky2() {
    let mut rng = StdRng::seed_from_u64(2);
    // Widths around hash_or_noop's 4-element cut-off and the sponge's rate of 8, and the batch
    // circuit's 135 wires; trees from 2 leaves up; caps from 0 to the whole tree.
    for (log_n, rate_bits, batch, cap_height) in [
        (0, 1, 1, 0),
        (1, 1, 3, 1),
        (2, 3, 4, 2),
        (3, 1, 5, 4),
        (4, 3, 8, 4),
        (5, 2, 9, 0),
        (6, 3, 17, 4),
        (8, 3, 135, 4),
    ] {
        let n = 1 << log_n;
        let coeffs = random(&mut rng, n * batch);
        let reference = plonky2_commitment(&coeffs, n, rate_bits, cap_height);
        let rows = RayonBackend.coset_lde_rows(&coeffs, n, rate_bits).expect("lde");
        let expected: Vec<F> = reference.merkle_tree.leaves.iter().flatten().copied().collect();
        assert_eq!(rows, expected, "LDE rows, n = {n}, batch = {batch}");
        let (digests, cap) = RayonBackend.merkle_tree(&rows, batch, cap_height).expect("tree");
        assert_eq!(digests, reference.merkle_tree.digests, "digests, n = {n}, batch = {batch}, cap = {cap_height}");
        assert_eq!(cap, reference.merkle_tree.cap.0, "cap, n = {n}, batch = {batch}");
    }
}

#[test]
fn shapes_are_checked() {
    let mut v = vec![F::ONE; 6];
    assert!(matches!(RayonBackend.coset_ntt_batch(&mut v, 4, F::ONE), Err(BackendError::Shape(_))));
    assert!(matches!(RayonBackend.coset_lde_rows(&v, 3, 1), Err(BackendError::Shape(_))));
    assert!(matches!(RayonBackend.merkle_tree(&v, 2, 0), Err(BackendError::Shape(_))), "3 leaves");
    assert!(matches!(RayonBackend.merkle_tree(&v[..4], 2, 2), Err(BackendError::Shape(_))), "cap above the tree");
}

#[test]
fn auto_falls_back_to_rayon_without_a_device_but_never_past_the_last_device() {
    let chosen = choose(Requested::Auto, 0).expect("auto gives a backend for device 0");
    // No machine has this many devices.
    let past = 4096;
    if prover_gpu::cuda::libraries_present() && CudaBackend::new(0).is_ok() {
        assert_eq!(chosen.name(), "cuda");
        for requested in [Requested::Auto, Requested::Cuda] {
            let err = choose(requested, past).err().expect("a device past the last is refused");
            assert!(matches!(err, BackendError::Config(_)), "{requested:?}: {err}");
        }
    } else {
        assert_eq!(chosen.name(), "cpu");
        assert_eq!(choose(Requested::Auto, past).expect("no device at all: the CPU").name(), "cpu");
        assert!(matches!(choose(Requested::Cuda, 0), Err(BackendError::Unavailable(_) | BackendError::Cuda(_))));
    }
}

/// Run on a GPU machine: `cargo test -p prover-gpu --release -- --ignored`. The same checks run
/// on every machine over the kernels emulated on the CPU (below).
#[test]
#[ignore = "needs a CUDA device; run with --ignored where one is present"]
fn cuda_kernels_are_bit_identical_to_rayon() {
    let cuda = cuda_kernels_agree_with_rayon(|| CudaBackend::new(0).expect("a CUDA device"), 20);
    // Every kernel launches in whole warps within what its compiled form allows; the table goes
    // to the log of scripts/gpu-run.sh (registers and local memory as this driver compiled them).
    cuda.quotient_kernel_ready().expect("the quotient kernel compiles");
    let kernels = cuda.kernels().expect("kernel attributes");
    assert_eq!(kernels.len(), cuda::KERNEL_FUNCTIONS.len() + 1);
    for k in &kernels {
        println!(
            "kernel {:<22} block {:>4}  registers {:>3}  local bytes {:>4}  max threads per block {}",
            k.name, k.block, k.registers, k.local_bytes, k.max_threads_per_block
        );
        assert!(k.block % 32 == 0 && k.block as i32 <= k.max_threads_per_block, "{k:?}");
    }
}

/// The CUDA backend's own code (its launches, their arguments, its buffers, what it keeps on the
/// device) over the kernels built for the CPU (`cuda::emulated`): the device test's checks, on
/// every machine. The proof-of-work ranges are shorter, as the emulated Poseidon is slow.
#[test]
fn emulated_cuda_kernels_are_bit_identical_to_rayon() {
    let cuda = cuda_kernels_agree_with_rayon(|| CudaBackend::emulated().expect("a C++ compiler"), 16);
    assert!(matches!(cuda.kernels(), Err(BackendError::Unsupported(_))), "no registers on the host");
}

/// The checks of the device tests, on backends `new` makes; the proof-of-work search's longer
/// ranges have 2^`grind_bits` candidates. Returns the last backend made.
fn cuda_kernels_agree_with_rayon<D: cuda::Device>(new: impl Fn() -> CudaBackend<D>, grind_bits: u32) -> CudaBackend<D> {
    let dual = DualBackend { first: RayonBackend, second: new() };
    let mut rng = StdRng::seed_from_u64(3);
    // The last case is a tree that is all cap.
    for (log_n, rate_bits, batch, cap_height) in
        [(1, 1, 1, 0), (3, 1, 5, 2), (6, 3, 17, 4), (10, 3, 135, 4), (14, 3, 3, 4), (2, 2, 7, 4)]
    {
        let n = 1 << log_n;
        let coeffs = random(&mut rng, n * batch);
        let rows = dual.coset_lde_rows(&coeffs, n, rate_bits).expect("LDE agrees");
        dual.merkle_tree(&rows, batch, cap_height).expect("Merkle tree agrees");
        // The whole commitment in one pass on the device: leaves, digests and cap; the tree stays
        // cached there, and its first evaluation uploads the host's coefficients beside it (as
        // the circuit's constants and sigmas are, once).
        let host_tree =
            dual.commit_tree(&coeffs, n, rate_bits, cap_height, Leaves::Host).expect("device commitment agrees");
        let c = commitment(&coeffs, n, host_tree, rate_bits);
        for _ in 0..2 {
            dual.evaluate(&c, &[FE::sample(&mut rng)]).expect("openings of cached coefficients agree");
        }
        dual.combine(&c, &[batch - 1, 0], &[FE::sample(&mut rng), FE::ONE]).expect("cached combinations agree");
        // The tree kept on the device: leaves and paths read back whole (inside the dual's
        // commit_tree), then the first, the last and random rows and their paths, repeated, as
        // FRI's queries read them.
        let tree = dual.commit_tree(&coeffs, n, rate_bits, cap_height, Leaves::Kept).expect("kept tree agrees");
        let m = n << rate_bits;
        let shape = Shape { rows: m, width: batch };
        let mut rows: Vec<usize> = (0..28).map(|_| rng.gen_range(0..m)).collect();
        rows.extend([0, m - 1, 0]);
        dual.leaf_rows(&tree, shape, &rows).expect("gathered rows agree");
        dual.merkle_paths(&tree, shape, &rows).expect("gathered paths agree");
        dual.release(&tree, shape);
        // From values: the inverse NTT on the device, its coefficients committed from there and
        // kept there (read back whole inside the dual), then the openings at two points and a
        // combination, from the kept coefficients, against rayon's from the host's. The values
        // are lent, as the prover lends its wire columns, and some are not canonical (a value
        // plus p), which a device backend must not upload as they lie.
        if n >= 2 {
            let mut values = random(&mut rng, n * batch);
            for v in values.iter_mut().step_by(3) {
                *v = F::from_noncanonical_u64(F::ORDER + (v.0 >> 33));
            }
            let (coeffs, tree) = dual
                .commit_values_tree(Cow::Borrowed(&values), n, rate_bits, cap_height, Leaves::Kept)
                .expect("value commitments agree");
            let c = commitment(&coeffs, n, tree, rate_bits);
            let points = [FE::sample(&mut rng), FE::sample(&mut rng)];
            dual.evaluate(&c, &points).expect("openings agree");
            let indices: Vec<usize> = (0..batch).rev().chain([0, batch - 1]).collect();
            let powers: Vec<FE> = indices.iter().map(|_| FE::sample(&mut rng)).collect();
            dual.combine(&c, &indices, &powers).expect("combinations agree");
            dual.release(&c.merkle_tree, shape);
        }
    }
    // FRI's proof-of-work search: the first witness of each range, at every input slot, and
    // none in a range too short to hold one.
    for pending in 0..8 {
        let mut t = Transcript::new();
        t.observe_elements(&random(&mut rng, 8 + pending));
        let (state, slot) = t.pow_state();
        let found = dual.grind(&state, slot, 12, 0, 1 << 16).expect("grind agrees");
        if let Some(w) = found {
            assert_eq!(dual.grind(&state, slot, 12, 0, w).expect("grind agrees"), None);
        }
        dual.grind(&state, slot, 16, 1 << grind_bits, 1 << grind_bits).expect("grind agrees on a larger range");
    }
    // What the device commits to stays there for the quotient: cached when the host has the
    // leaves too, held when it does not, until released.
    let cuda = new();
    let n = 1 << 6;
    let tree = cuda.commit_tree(&random(&mut rng, n * 9), n, 3, 2, Leaves::Host).expect("commit");
    assert_eq!((cuda.resident_commitments(), cuda.held_commitments()), (1, 0));
    assert_eq!(tree.leaves.len(), n << 3);
    let before = cuda.transfers().expect("a device backend counts its copies");
    let kept = cuda.commit_tree(&random(&mut rng, n * 9), n, 3, 2, Leaves::Kept).expect("commit");
    assert!(kept.leaves.is_empty() && kept.digests.is_empty());
    let moved = cuda.transfers().expect("counted").since(before);
    assert_eq!(moved.from_device, 32 * kept.cap.0.len() as u64, "only the cap came back");
    assert_eq!((cuda.resident_commitments(), cuda.held_commitments()), (2, 1));
    let shape = Shape { rows: n << 3, width: 9 };
    let past = [n << 3];
    assert!(matches!(cuda.leaf_rows(&kept, shape, &past), Err(BackendError::Shape(_))), "a row past the tree");
    assert!(matches!(cuda.merkle_paths(&kept, shape, &past), Err(BackendError::Shape(_))), "a path past the tree");
    let narrower = Shape { width: 8, ..shape };
    assert!(matches!(cuda.leaf_rows(&kept, narrower, &[0]), Err(BackendError::Shape(_))), "another width");
    cuda.release(&kept, shape);
    assert_eq!((cuda.resident_commitments(), cuda.held_commitments()), (1, 0));
    assert!(matches!(cuda.leaf_rows(&kept, shape, &[0]), Err(BackendError::Shape(_))), "released");
    assert!(matches!(cuda.merkle_paths(&kept, shape, &[0]), Err(BackendError::Shape(_))), "released");
    cuda
}

/// NVRTC compiles both CUDA sources, and each names every function the backend loads. It needs
/// only libnvrtc, no device: `scripts/nvrtc-check.sh` fetches CUDA 13.0's from PyPI, runs this
/// with `PTX_DIR` set, and has `ptxas` report each kernel's registers and spills for sm_90.
#[test]
#[ignore = "needs libnvrtc; scripts/nvrtc-check.sh fetches it (scripts/gpu-run.sh runs it on a device)"]
fn nvrtc_compiles_every_kernel_the_backend_loads() {
    // SAFETY: only tries to dlopen the library.
    assert!(unsafe { cudarc::nvrtc::sys::is_culib_present() }, "libnvrtc not found: see scripts/nvrtc-check.sh");
    let sources = [
        ("kernels", cuda::kernels_source(), cuda::KERNEL_FUNCTIONS.to_vec()),
        ("quotient", cuda::quotient_source(true), vec![cuda::QUOTIENT_FUNCTION]),
    ];
    for (name, source, functions) in sources {
        let t = std::time::Instant::now();
        let ptx = cudarc::nvrtc::compile_ptx(source).unwrap_or_else(|e| panic!("NVRTC rejects {name}: {e:?}")).to_src();
        // What each process that starts the backend (or first proves a quotient) spends on it.
        println!("nvrtc {name}: {:.2} s, {} bytes of PTX", t.elapsed().as_secs_f64(), ptx.len());
        for (function, _) in functions {
            assert!(ptx.contains(&format!(".entry {function}(")), "{name} has no kernel {function}");
        }
        if let Ok(dir) = std::env::var("PTX_DIR") {
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.ptx")), ptx).expect("write the PTX");
        }
    }
}

#[test]
fn commitments_equal_plonky2s_polynomial_batch() {
    let mut rng = StdRng::seed_from_u64(4);
    for (log_n, batch, cap_height) in [(2, 1, 0), (5, 7, 3), (7, 135, 4), (3, 4, 6)] {
        let n = 1 << log_n;
        let coeffs = random(&mut rng, n * batch);
        let reference = plonky2_commitment(&coeffs, n, 3, cap_height);
        let backends: [&dyn Backend; 2] = [&RayonBackend, &KernelsOnly { break_pairs: false }];
        for backend in backends {
            let polys = coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect();
            let ours = prover_gpu::commit(backend, polys, 3, cap_height).expect("commit");
            assert_eq!(ours.merkle_tree, reference.merkle_tree, "{} n = {n}", backend.name());
            assert_eq!(ours.polynomials, reference.polynomials);
            assert_eq!(
                (ours.degree_log, ours.rate_bits, ours.blinding),
                (reference.degree_log, reference.rate_bits, reference.blinding)
            );
        }
    }
}

#[test]
fn intt_and_commit_values_are_bit_identical_to_plonky2() {
    use plonky2::field::polynomial::PolynomialValues;
    let mut rng = StdRng::seed_from_u64(7);
    for (log_n, batch) in [(0, 1), (1, 2), (3, 5), (6, 9), (9, 3)] {
        let n = 1 << log_n;
        let values = random(&mut rng, n * batch);
        let mut ours = values.clone();
        RayonBackend.intt_batch(&mut ours, n).expect("intt");
        for p in 0..batch {
            let theirs = PolynomialValues::new(values[p * n..(p + 1) * n].to_vec()).ifft();
            assert_eq!(ours[p * n..(p + 1) * n], theirs.coeffs[..], "n = {n}");
        }
        let polys = values.chunks(n).map(|c| PolynomialValues::new(c.to_vec())).collect();
        let theirs = PolynomialBatch::<F, PoseidonGoldilocksConfig, 2>::from_values(
            polys,
            3,
            false,
            0,
            &mut TimingTree::default(),
            None,
        );
        let ours = commit_values(&RayonBackend, values, n, 3, 0).expect("commit");
        assert_eq!(ours.merkle_tree.cap, theirs.merkle_tree.cap, "n = {n}");
    }
}

#[test]
fn the_dual_backend_locates_a_wrong_commitment() {
    let mut rng = StdRng::seed_from_u64(11);
    let n = 1 << 4;
    let coeffs = random(&mut rng, n * 5);
    let dual = DualBackend { first: RayonBackend, second: KernelsOnly { break_pairs: false } };
    dual.commit_tree(&coeffs, n, 3, 2, Leaves::Host).expect("the two paths agree");
    let dual = DualBackend { first: RayonBackend, second: KernelsOnly { break_pairs: true } };
    match dual.commit_tree(&coeffs, n, 3, 2, Leaves::Host) {
        Err(BackendError::Mismatch { kernel: "commit_tree", detail }) => {
            assert!(detail.starts_with("digest "), "{detail}")
        }
        other => panic!("expected a commit_tree mismatch, got {:?}", other.map(|t| t.cap)),
    }
    match dual.commit_values_tree(Cow::Borrowed(&coeffs), n, 3, 2, Leaves::Host) {
        Err(BackendError::Mismatch { kernel: "commit_values_tree", detail }) => {
            assert!(detail.starts_with("digest "), "{detail}")
        }
        other => panic!("expected a commit_values_tree mismatch, got {:?}", other.map(|t| t.1.cap)),
    }
    let agreeing = DualBackend { first: RayonBackend, second: KernelsOnly { break_pairs: false } };
    let (coeffs_of_values, _) =
        agreeing.commit_values_tree(Cow::Borrowed(&coeffs), n, 3, 2, Leaves::Host).expect("agree");
    let mut expected = coeffs.clone();
    RayonBackend.intt_batch(&mut expected, n).expect("intt");
    assert_eq!(coeffs_of_values, expected);
    let rows = RayonBackend.coset_lde_rows(&coeffs, n, 3).expect("rows");
    match dual.merkle_tree(&rows, 5, 2) {
        Err(BackendError::Mismatch { kernel: "merkle_tree", .. }) => {}
        other => panic!("expected a merkle_tree mismatch, got {:?}", other.map(|t| t.1)),
    }
}

/// A tree kept by the second backend of a dual reads back equal to the first's: leaves and
/// Merkle paths whole when committed, and at any rows; a row past the tree is refused; release
/// frees it.
/// Coefficients a backend kept (a commitment to values with `Leaves::Kept`) read back, are
/// evaluated and combined through the dual backend, which compares them with the first's, and
/// the values are plonky2's; a second backend whose values differ is caught.
#[test]
fn kept_coefficients_are_evaluated_and_combined_through_the_dual_backend() {
    use plonky2::field::extension::FieldExtension;
    use plonky2::field::polynomial::PolynomialValues;
    use prover_gpu::commit::shape;

    let mut rng = StdRng::seed_from_u64(13);
    let (n, width) = (1 << 5, 6);
    let values = random(&mut rng, n * width);
    let expected: Vec<PolynomialCoeffs<F>> =
        values.chunks(n).map(|v| PolynomialValues::new(v.to_vec()).ifft()).collect();
    let points = [FE::sample(&mut rng), FE::sample(&mut rng)];
    let (indices, powers) = ([4usize, 0, 5, 0], [FE::sample(&mut rng), FE::sample(&mut rng), FE::ONE, FE::TWO]);
    for skew in [false, true] {
        let mut second = Keeping::new(false);
        second.skew = skew;
        let dual = DualBackend { first: RayonBackend, second };
        let (coeffs, tree) =
            dual.commit_values_tree(values.clone().into(), n, 3, 2, Leaves::Kept).expect("the coefficients agree");
        assert_eq!(coeffs, expected.iter().flat_map(|p| p.coeffs.clone()).collect::<Vec<_>>());
        assert_eq!(dual.second.kept.held(), 1, "the second kept its coefficients");
        let c = commitment(&coeffs, n, tree, 3);
        let evaluated = dual.evaluate(&c, &points);
        let combined = dual.combine(&c, &indices, &powers);
        if skew {
            assert!(matches!(evaluated, Err(BackendError::Mismatch { kernel: "evaluate", .. })), "{evaluated:?}");
            assert!(matches!(combined, Err(BackendError::Mismatch { kernel: "combine", .. })), "{combined:?}");
        } else {
            let want: Vec<Vec<FE>> =
                points.iter().map(|&x| expected.iter().map(|p| p.to_extension::<2>().eval(x)).collect()).collect();
            assert_eq!(evaluated.expect("the values agree"), want);
            let mut sum = vec![FE::ZERO; n];
            for (&i, &power) in indices.iter().zip(&powers) {
                for (s, &x) in sum.iter_mut().zip(&expected[i].coeffs) {
                    *s += FieldExtension::<2>::scalar_mul(&power, x);
                }
            }
            assert_eq!(combined.expect("the combinations agree"), sum);
            assert!(
                matches!(dual.combine(&c, &[width], &[FE::ONE]), Err(BackendError::Shape(_))),
                "no such polynomial"
            );
        }
        dual.release(&c.merkle_tree, shape(&c));
        assert!(dual.second.kept.is_empty());
    }
}

/// A backend that returns the wrong number of coefficients for a commitment it kept fails the
/// commitment, and is told to release what it kept.
#[test]
fn a_kept_commitment_with_the_wrong_coefficients_is_refused_and_released() {
    let mut rng = StdRng::seed_from_u64(14);
    let mut broken = Keeping::new(false);
    broken.short_coeffs = true;
    let n = 1 << 4;
    let err = prover_gpu::commit::Held::commit_values(&broken, random(&mut rng, n * 3).into(), n, 3, 2)
        .err()
        .expect("a short set of coefficients");
    assert!(matches!(err, BackendError::Shape(_)), "{err}");
    assert!(broken.kept.is_empty(), "nothing stays kept");
}

#[test]
fn kept_trees_read_back_through_the_dual_backend() {
    let mut rng = StdRng::seed_from_u64(12);
    let n = 1 << 4;
    let coeffs = random(&mut rng, n * 5);
    let dual = DualBackend { first: RayonBackend, second: Keeping::new(false) };
    let tree = dual.commit_tree(&coeffs, n, 3, 2, Leaves::Kept).expect("the two commitments agree");
    assert_eq!(tree.leaves.len(), n << 3, "the first's leaves, on the host");
    assert_eq!(dual.second.kept.held(), 1);
    let shape = Shape { rows: n << 3, width: 5 };
    let rows = [5, 0, (n << 3) - 1, 5];
    assert_eq!(dual.leaf_rows(&tree, shape, &rows).expect("the rows agree"), rows.map(|r| tree.leaves[r].clone()));
    assert_eq!(dual.merkle_paths(&tree, shape, &rows).expect("the paths agree"), rows.map(|r| tree.prove(r)));
    assert!(matches!(dual.leaf_rows(&tree, shape, &[n << 3]), Err(BackendError::Shape(_))));
    assert!(matches!(dual.merkle_paths(&tree, shape, &[n << 3]), Err(BackendError::Shape(_))));
    dual.release(&tree, shape);
    assert!(dual.second.kept.is_empty());
    let stripped = plonky2::hash::merkle_tree::MerkleTree { leaves: Vec::new(), digests: Vec::new(), ..tree };
    assert!(matches!(dual.second.leaf_rows(&stripped, shape, &[0]), Err(BackendError::Shape(_))), "released");
    assert!(matches!(dual.second.merkle_paths(&stripped, shape, &[0]), Err(BackendError::Shape(_))), "released");
}
