//! Batch proving and native execution.
//!
//! `cargo bench -p benches --bench batch`; `BATCH_CAPACITY` overrides the slot count (default:
//! the network's, 183).

use circuits::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prover_gpu::Prover;
use rayon::prelude::*;

fn capacity() -> usize {
    std::env::var("BATCH_CAPACITY").ok().and_then(|v| v.parse().ok()).unwrap_or(183)
}

/// A full batch of mixed traffic from the devnet genesis: transfers, swaps, a register.
fn mixed_batch(capacity: usize) -> (Executor, Vec<Tx>) {
    let state = Genesis::devnet(64).build().expect("genesis");
    let ex = Executor::new(state, capacity);
    let txs = benches::mixed_load(capacity, 64, 0.3);
    (ex, txs)
}

fn execution(c: &mut Criterion) {
    let n = 256;
    let mut g = c.benchmark_group("execution");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("apply_mixed_256", |b| {
        b.iter_batched(
            || {
                let state = Genesis::devnet(64).build().expect("genesis");
                (Executor::new(state, n), benches::mixed_load(n, 64, 0.3))
            },
            |(mut ex, txs)| {
                for tx in &txs {
                    ex.apply(tx).expect("valid");
                }
                ex.seal_batch().expect("seal")
            },
            BatchSize::LargeInput,
        )
    });
    // Eight batches in a row, as a sequencer executes them: each sealed in place (the hashing
    // before the next batch's applies), against each hashing behind the next batch's applies.
    let batches = 8;
    g.throughput(Throughput::Elements((n * batches) as u64));
    for behind in [false, true] {
        let name = if behind { "eight_batches_of_256/sealed_behind" } else { "eight_batches_of_256/sealed_in_place" };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let state = Genesis::devnet(1024).build().expect("genesis");
                    (Executor::new(state, n), benches::mixed_load(n * batches, 1024, 0.3))
                },
                |(mut ex, txs)| {
                    for batch in txs.chunks(n) {
                        for tx in batch {
                            ex.apply(tx).expect("valid");
                        }
                        if behind {
                            ex.seal_batch_behind().expect("seal");
                        } else {
                            ex.seal_batch().expect("seal");
                        }
                    }
                    while ex.wait_hashed().is_some() {}
                    ex
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// The circuit the network proves (padded to the merge circuit's shape) and a full mixed batch,
/// built once for every group of this run.
fn full_batch(cap: usize) -> &'static (BatchCircuit, BatchWitness) {
    static BATCH: std::sync::OnceLock<(BatchCircuit, BatchWitness)> = std::sync::OnceLock::new();
    BATCH.get_or_init(|| {
        let (circuit, _) = aggregator::AggregationCircuits::build(cap).expect("build");
        let (mut ex, txs) = mixed_batch(cap);
        for tx in &txs {
            ex.apply(tx).expect("valid");
        }
        (circuit, ex.seal_batch().expect("seal"))
    })
}

fn proving(c: &mut Criterion) {
    let cap = capacity();
    let (circuit, w) = full_batch(cap);
    let mut g = c.benchmark_group("batch_proof");
    g.sample_size(10);
    g.throughput(Throughput::Elements(cap as u64));
    // The same batch on each prover, in one run: stock plonky2 is the baseline.
    for prover in benches::provers() {
        g.bench_function(format!("prove_{cap}_slots/{}", prover.name()), |b| {
            b.iter(|| circuit.prove(&prover, w).expect("prove"))
        });
    }
    let proof = circuit.prove(&Prover::cpu(), w).expect("prove");
    g.bench_function("verify", |b| b.iter(|| circuit.verify(&proof).expect("verify")));
    g.finish();
}

/// Witness generation alone: plonky2's `generate_partial_witness` against ours (plonky2's
/// generators, our scheduler), on the full mixed batch. It is the largest step a GPU leaves on
/// the host.
fn witness_generation(c: &mut Criterion) {
    let cap = capacity();
    let (circuit, w) = full_batch(cap);
    let data = circuit.data();
    let table = prover_gpu::witness::WatchTable::cached(&data.prover_only, &data.common).expect("table");
    let mut g = c.benchmark_group("witness");
    g.throughput(Throughput::Elements(cap as u64));
    g.bench_function(format!("generate_{cap}_slots/plonky2"), |b| {
        b.iter_batched(
            || circuit.witness(w).expect("inputs"),
            |pw| plonky2::iop::generator::generate_partial_witness(pw, &data.prover_only, &data.common).expect("ok"),
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("generate_{cap}_slots/ours"), |b| {
        b.iter_batched(
            || circuit.witness(w).expect("inputs"),
            |pw| {
                prover_gpu::witness::generate_partial_witness(pw, &data.prover_only, &data.common, &table).expect("ok")
            },
            BatchSize::LargeInput,
        )
    });
    // The wire columns from the generated witness: plonky2's `full_witness` and the transpose the
    // pipeline used to run after it, against `wire_columns`.
    let partition = prover_gpu::witness::generate_partial_witness(
        circuit.witness(w).expect("inputs"),
        &data.prover_only,
        &data.common,
        &table,
    )
    .expect("witness");
    let (n, k) = (data.common.degree(), data.common.config.num_wires);
    g.bench_function(format!("wire_columns_{cap}_slots/plonky2"), |b| {
        b.iter_batched(
            || partition.clone(),
            |p| {
                let matrix = p.full_witness();
                let mut columns = vec![plonky2::field::types::Field::ZERO; k * n];
                columns.par_chunks_mut(n).enumerate().for_each(|(j, col)| {
                    col.iter_mut().enumerate().for_each(|(i, v)| *v = matrix.get_wire(i, j));
                });
                columns
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function(format!("wire_columns_{cap}_slots/ours"), |b| {
        b.iter(|| prover_gpu::witness::wire_columns(&partition))
    });
    g.finish();
}

criterion_group!(benches, execution, proving, witness_generation);
criterion_main!(benches);
