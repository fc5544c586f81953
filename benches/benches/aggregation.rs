//! Aggregation: time per tree node (a merge of four batch proofs, as a block of four has; a merge
//! of two merges), block verification, block proof size, and a merge's witness generation alone.
//!
//! `cargo bench -p benches --bench aggregation`

use aggregator::{AggJob, AggregationCircuits, BlockPublicInputs, BlockVerifier, ProofBytes, ProofKind};
use circuits::hash::ZERO_DIGEST;
use circuits::{Executor, Genesis};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use prover_gpu::Prover;

fn aggregation(c: &mut Criterion) {
    let cap = std::env::var("BATCH_CAPACITY").ok().and_then(|v| v.parse().ok()).unwrap_or(183);
    let (batch, circuits) = AggregationCircuits::build(cap).expect("circuits");
    let mut ex = Executor::new(Genesis::devnet(2).build().expect("genesis"), cap);
    let w: Vec<_> = (0..4).map(|_| ex.seal_batch().expect("seal")).collect();
    let cpu = Prover::cpu();
    let b: Vec<ProofBytes> = w
        .iter()
        .map(|w| ProofBytes { kind: ProofKind::Batch, bytes: batch.prove(&cpu, w).expect("prove").to_bytes() })
        .collect();
    let merge = |children: &[&ProofBytes]| AggJob::Merge { children: children.iter().map(|&c| c.clone()).collect() };
    let leaf_job = merge(&[&b[0], &b[1], &b[2], &b[3]]);
    let m01 = circuits.run(&cpu, &merge(&[&b[0], &b[1]])).expect("merge");
    let m23 = circuits.run(&cpu, &merge(&[&b[2], &b[3]])).expect("merge");
    let upper_job = merge(&[&m01, &m23]);
    let block = circuits.run(&cpu, &upper_job).expect("merge");
    eprintln!("block proof: {} bytes; batch proof: {} bytes", block.bytes.len(), b[0].bytes.len());
    let verifier = BlockVerifier::new(&circuits);
    let expected = BlockPublicInputs { old_root: w[0].old_root, new_root: w[3].new_root, commitment: ZERO_DIGEST };
    verifier.verify(&block.bytes, &expected).expect("valid block");

    let mut g = c.benchmark_group("aggregation");
    g.sample_size(10);
    // Each node on each prover, in one run: stock plonky2 is the baseline.
    for prover in benches::provers() {
        g.bench_function(format!("merge_four_batches_node/{}", prover.name()), |b| {
            b.iter(|| circuits.run(&prover, &leaf_job).expect("merge"))
        });
        g.bench_function(format!("merge_merges_node/{}", prover.name()), |b| {
            b.iter(|| circuits.run(&prover, &upper_job).expect("merge"))
        });
    }
    // What a merge job does before its proof: each child decoded and verified, the chaining
    // checked, the merge's witness set.
    g.bench_function("merge_four_batches_inputs", |b| b.iter(|| circuits.job_inputs(&leaf_job).expect("inputs")));
    g.bench_function("verify_block", |b| b.iter(|| verifier.verify(&block.bytes, &expected).expect("verify")));
    g.finish();

    // The merge's witness generation alone, plonky2's against ours: on a device it is the largest
    // step a merge leaves on the host.
    let data = circuits.block_circuit();
    let table = prover_gpu::witness::WatchTable::cached(&data.prover_only, &data.common).expect("table");
    let inputs = || circuits.job_inputs(&leaf_job).expect("inputs");
    let mut g = c.benchmark_group("witness");
    g.bench_function("generate_merge_of_four/plonky2", |b| {
        b.iter_batched(
            inputs,
            |pw| plonky2::iop::generator::generate_partial_witness(pw, &data.prover_only, &data.common).expect("ok"),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("generate_merge_of_four/ours", |b| {
        b.iter_batched(
            inputs,
            |pw| {
                prover_gpu::witness::generate_partial_witness(pw, &data.prover_only, &data.common, &table).expect("ok")
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
