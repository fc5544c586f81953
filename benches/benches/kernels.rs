//! The commitment step per backend against plonky2's own: NTT, coset LDE and Merkle tree of 135
//! polynomials (the batch circuit's wires) of 2^13 coefficients at rate 1/8.
//!
//! `cargo bench -p benches --bench kernels`; CUDA rows appear where a device is present.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::{Field, Sample};
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::plonk::config::PoseidonGoldilocksConfig;
use plonky2::util::timing::TimingTree;
use prover_gpu::{commit, Backend, CudaBackend, RayonBackend, F};

const LOG_N: usize = 13;
const WIDTH: usize = 135;
const RATE_BITS: usize = 3;
const CAP_HEIGHT: usize = 4;

fn kernels(c: &mut Criterion) {
    let n = 1 << LOG_N;
    let coeffs: Vec<F> = (0..n * WIDTH).map(|_| F::rand()).collect();
    let polys = || coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect::<Vec<_>>();
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(RayonBackend)];
    match CudaBackend::new(0) {
        Ok(b) => backends.push(Box::new(b)),
        Err(e) => eprintln!("CUDA rows skipped: {e}"),
    }
    let mut g = c.benchmark_group("commitment");
    g.sample_size(10);
    g.bench_function("plonky2_from_coeffs", |b| {
        b.iter_batched(
            polys,
            |p| {
                PolynomialBatch::<F, PoseidonGoldilocksConfig, 2>::from_coeffs(
                    p,
                    RATE_BITS,
                    false,
                    CAP_HEIGHT,
                    &mut TimingTree::default(),
                    None,
                )
            },
            BatchSize::LargeInput,
        )
    });
    for backend in &backends {
        let name = backend.name();
        g.bench_function(format!("{name}_commit"), |b| {
            b.iter_batched(
                polys,
                |p| commit(backend.as_ref(), p, RATE_BITS, CAP_HEIGHT).expect("commit"),
                BatchSize::LargeInput,
            )
        });
        let mut lde = vec![F::ZERO; (n << RATE_BITS) * WIDTH];
        g.bench_function(format!("{name}_coset_ntt"), |b| {
            b.iter(|| backend.coset_ntt_batch(&mut lde, n << RATE_BITS, F::coset_shift()).expect("ntt"))
        });
        let rows = backend.coset_lde_rows(&coeffs, n, RATE_BITS).expect("lde");
        g.bench_function(format!("{name}_merkle_tree"), |b| {
            b.iter(|| backend.merkle_tree(&rows, WIDTH, CAP_HEIGHT).expect("tree"))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
