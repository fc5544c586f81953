//! The commitment step per backend against plonky2's own: NTT, coset LDE and Merkle tree of 135
//! polynomials (the batch circuit's wires) of 2^13 coefficients at rate 1/8; the NTT and LDE
//! also as plonky2 runs them (its FFT on each polynomial, in parallel), the rayon backend's
//! baseline. Then the opening
//! proof (FRI) per backend against plonky2's `prove_openings`, on oracles of the batch proof's
//! shape. Between them, leaf hashing and the permutation: plonky2's scalar Poseidon against the
//! rayon backend's eight lanes.
//!
//! `cargo bench -p benches --bench kernels`; CUDA rows appear where a device is present, among
//! them the commitment with its leaves kept on the device (`cuda_commit_kept`, the prover's path)
//! against the one that brings them to the host (`cuda_commit`).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use plonky2::field::extension::Extendable;
use plonky2::field::fft::fft_root_table;
use plonky2::field::polynomial::PolynomialCoeffs;
use plonky2::field::types::{Field, PrimeField64, Sample};
use plonky2::fri::oracle::PolynomialBatch;
use plonky2::fri::structure::{FriBatchInfo, FriInstanceInfo, FriOracleInfo, FriPolynomialInfo};
use plonky2::hash::poseidon::{Poseidon, PoseidonHash};
use plonky2::iop::challenger::Challenger;
use plonky2::plonk::circuit_data::CircuitConfig;
use plonky2::plonk::config::{Hasher, PoseidonGoldilocksConfig};
use plonky2::util::timing::TimingTree;
use prover_gpu::commit::Held;
use prover_gpu::lanes::{self, Isa};
use prover_gpu::poseidon_x8;
use prover_gpu::{commit, fri, Backend, CudaBackend, Digest, RayonBackend, Transcript, F};
use rayon::prelude::*;

const LOG_N: usize = 13;
const WIDTH: usize = 135;
const RATE_BITS: usize = 3;
const CAP_HEIGHT: usize = 4;

fn backends() -> Vec<Box<dyn Backend>> {
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(RayonBackend)];
    match CudaBackend::new(0) {
        Ok(b) => backends.push(Box::new(b)),
        Err(e) => eprintln!("CUDA rows skipped: {e}"),
    }
    backends
}

fn kernels(c: &mut Criterion) {
    let n = 1 << LOG_N;
    let coeffs: Vec<F> = (0..n * WIDTH).map(|_| F::rand()).collect();
    let polys = || coeffs.chunks(n).map(|c| PolynomialCoeffs::new(c.to_vec())).collect::<Vec<_>>();
    let backends = backends();
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
    // plonky2's FFT on each polynomial in parallel, with its shared root table: what the rayon
    // backend ran before its NTT went onto vector lanes.
    let m = n << RATE_BITS;
    let table = fft_root_table(m);
    let mut lde = vec![F::ZERO; m * WIDTH];
    g.bench_function("plonky2_coset_ntt", |b| {
        b.iter(|| {
            lde.par_chunks_mut(m).for_each(|p| {
                let v = PolynomialCoeffs::new(p.to_vec()).coset_fft_with_options(F::coset_shift(), None, Some(&table));
                p.copy_from_slice(&v.values);
            })
        })
    });
    g.bench_function("plonky2_coset_lde", |b| {
        b.iter(|| {
            coeffs
                .par_chunks(n)
                .map(|c| {
                    PolynomialCoeffs::new(c.to_vec())
                        .lde(RATE_BITS)
                        .coset_fft_with_options(F::coset_shift(), Some(RATE_BITS), Some(&table))
                        .values
                })
                .collect::<Vec<_>>()
        })
    });
    // What bringing a commitment's leaves back from a device costs the host besides the copy
    // itself: a fresh buffer of the LDE's words (the copy's destination), then plonky2's one
    // `Vec` per row. The prover's commitments on the CUDA backend skip it (`cuda_commit_kept`).
    let words: Vec<u64> =
        RayonBackend.coset_lde_rows(&coeffs, n, RATE_BITS).expect("lde").iter().map(|x| x.to_canonical_u64()).collect();
    g.bench_function("host_leaves_from_device_words", |b| {
        b.iter(|| {
            let copy = words.clone();
            copy.par_chunks(WIDTH)
                .map(|r| r.iter().map(|&x| F::from_canonical_u64(x)).collect())
                .collect::<Vec<Vec<F>>>()
        })
    });
    drop(words);
    for backend in &backends {
        let name = backend.name();
        g.bench_function(format!("{name}_coset_lde"), |b| {
            b.iter(|| backend.coset_lde_batch(&coeffs, n, RATE_BITS, F::coset_shift()).expect("lde"))
        });
        g.bench_function(format!("{name}_commit"), |b| {
            b.iter_batched(
                polys,
                |p| commit(backend.as_ref(), p, RATE_BITS, CAP_HEIGHT).expect("commit"),
                BatchSize::LargeInput,
            )
        });
        // The prover's commitments keep their leaves where the backend made them (released when
        // the commitment drops): on a device, and in the LDE's columns on the rayon backend.
        g.bench_function(format!("{name}_commit_kept"), |b| {
            b.iter_batched(
                polys,
                |p| Held::commit(backend.as_ref(), p, RATE_BITS, CAP_HEIGHT).expect("commit"),
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

/// Leaf hashing, the bulk of a CPU commitment: plonky2's `hash_or_noop` on every row in
/// parallel (what the rayon backend did) against [`poseidon_x8`] on this CPU's best instruction
/// set (what it does now), on 2^14 rows of the wires' width; then one permutation of eight
/// states, plonky2's and ours on each vector instruction set the CPU has, on one thread, alone
/// and writing the Poseidon gate's witness.
fn poseidon(c: &mut Criterion) {
    let rows: Vec<F> = (0..(1 << 14) * WIDTH).map(|_| F::rand()).collect();
    let mut g = c.benchmark_group("poseidon");
    g.sample_size(10);
    g.bench_function("plonky2_hash_rows", |b| {
        b.iter(|| rows.par_chunks(WIDTH).map(PoseidonHash::hash_or_noop).collect::<Vec<_>>())
    });
    g.bench_function("x8_hash_rows", |b| {
        b.iter(|| {
            let mut out = vec![Digest::default(); 1 << 14];
            poseidon_x8::hash_rows(&rows, WIDTH, &mut out);
            out
        })
    });
    let states: [[F; 12]; 8] = std::array::from_fn(|_| F::rand_array());
    g.bench_function("plonky2_permute_8_states", |b| b.iter(|| states.map(F::poseidon)));
    let lanes: [[u64; 8]; 12] = std::array::from_fn(|i| std::array::from_fn(|l| states[l][i].0));
    for isa in [Isa::Avx512, Isa::Avx2] {
        if !isa.supported() {
            eprintln!("{} rows skipped: this CPU lacks it", isa.name());
            continue;
        }
        g.bench_function(format!("x8_{}_permute_8_states", isa.name()), |b| {
            b.iter(|| {
                let mut s = lanes;
                poseidon_x8::permute_with(isa, &mut s);
                s
            })
        });
        // The Poseidon gates' witness (the S-box inputs kept as wires), as witness generation
        // runs it.
        g.bench_function(format!("x8_{}_permute_for_gate_8_states", isa.name()), |b| {
            b.iter(|| {
                let mut s = lanes;
                let mut sbox = [[0u64; 8]; poseidon_x8::GATE_SBOX_INPUTS];
                poseidon_x8::permute_for_gate_with(isa, &mut s, &mut sbox);
                (s, sbox)
            })
        });
    }
    g.finish();
    eprintln!("x8_hash_rows ran on {}", lanes::isa().name());
}

/// The batch proof's oracles (constants and sigmas, wires, Z's and partial products, quotient
/// chunks) at its trace length, 2^14, and the standard recursion config's FRI: every polynomial
/// opened at ζ, the Z's also at gζ.
fn openings(c: &mut Criterion) {
    const DEGREE_BITS: usize = 14;
    const ORACLES: [usize; 4] = [90, 135, 20, 16];
    type FE = <F as Extendable<2>>::Extension;
    let params = CircuitConfig::standard_recursion_config().fri_config.fri_params(DEGREE_BITS, false);
    let (rate_bits, cap_height) = (params.config.rate_bits, params.config.cap_height);
    let oracles: Vec<PolynomialBatch<F, PoseidonGoldilocksConfig, 2>> = ORACLES
        .iter()
        .map(|&count| {
            let polys = (0..count).map(|_| PolynomialCoeffs::new(F::rand_vec(1 << DEGREE_BITS))).collect();
            PolynomialBatch::from_coeffs(polys, rate_bits, false, cap_height, &mut TimingTree::default(), None)
        })
        .collect();
    let oracles: Vec<&PolynomialBatch<F, PoseidonGoldilocksConfig, 2>> = oracles.iter().collect();
    let zeta = FE::rand();
    let instance = FriInstanceInfo {
        oracles: ORACLES.iter().map(|&num_polys| FriOracleInfo { num_polys, blinding: false }).collect(),
        batches: vec![
            FriBatchInfo {
                point: zeta,
                polynomials: (0..4).flat_map(|o| FriPolynomialInfo::from_range(o, 0..ORACLES[o])).collect(),
            },
            FriBatchInfo {
                point: FE::primitive_root_of_unity(DEGREE_BITS) * zeta,
                polynomials: FriPolynomialInfo::from_range(2, 0..2),
            },
        ],
    };
    // The proof of work's cost is geometric in the transcript (about 2^16 candidates on average,
    // the first witness anywhere between 1 and a few hundred thousand), so every prover goes
    // through the same 32 transcripts in turn: plonky2's challenger and ours, fed alike.
    let transcripts: Vec<(Challenger<F, PoseidonHash>, Transcript)> = (0..32)
        .map(|_| {
            let seed = F::rand_vec(5);
            let (mut c, mut t) = (Challenger::new(), Transcript::new());
            c.observe_elements(&seed);
            t.observe_elements(&seed);
            (c, t)
        })
        .collect();
    let next = std::cell::Cell::new(0usize);
    let take = || {
        let i = next.get();
        next.set(i + 1);
        transcripts[i % transcripts.len()].clone()
    };

    let mut g = c.benchmark_group("openings");
    g.sample_size(10);
    next.set(0);
    g.bench_function("plonky2_prove_openings", |b| {
        b.iter_batched(
            take,
            |(mut c, _)| {
                PolynomialBatch::prove_openings(
                    &instance,
                    &oracles,
                    &mut c,
                    &params,
                    None,
                    None,
                    &mut TimingTree::default(),
                )
            },
            BatchSize::SmallInput,
        )
    });
    for backend in &backends() {
        next.set(0);
        g.bench_function(format!("{}_prove_openings", backend.name()), |b| {
            b.iter_batched(
                take,
                |(_, mut t)| fri::prove_openings(backend.as_ref(), &instance, &oracles, &mut t, &params).expect("fri"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, kernels, poseidon, openings);
criterion_main!(benches);
