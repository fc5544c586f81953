//! Aggregation: time per tree node (wrap, merge), block verification, block proof size.
//!
//! `cargo bench -p benches --bench aggregation`

use aggregator::{AggJob, AggregationCircuits, BlockPublicInputs, BlockVerifier, ProofBytes, ProofKind};
use circuits::hash::ZERO_DIGEST;
use circuits::{BatchCircuit, Executor, Genesis};
use criterion::{criterion_group, criterion_main, Criterion};
use prover_gpu::Prover;

fn aggregation(c: &mut Criterion) {
    let cap = std::env::var("BATCH_CAPACITY").ok().and_then(|v| v.parse().ok()).unwrap_or(69);
    let batch = BatchCircuit::build(cap).expect("batch circuit");
    let circuits = AggregationCircuits::build(&batch).expect("aggregation circuits");
    let mut ex = Executor::new(Genesis::devnet(2).build().expect("genesis"), cap);
    let w1 = ex.seal_batch().expect("seal");
    let w2 = ex.seal_batch().expect("seal");
    let cpu = Prover::cpu();
    let p = |w| ProofBytes { kind: ProofKind::Batch, bytes: batch.prove(&cpu, w).expect("prove").to_bytes() };
    let (b1, b2) = (p(&w1), p(&w2));
    let wrap1 = circuits.run(&cpu, &AggJob::Wrap { batch: b1.clone() }).expect("wrap");
    let wrap2 = circuits.run(&cpu, &AggJob::Wrap { batch: b2 }).expect("wrap");
    let merge_job = AggJob::Merge { left: wrap1.clone(), right: Some(wrap2) };
    let block = circuits.run(&cpu, &merge_job).expect("merge");
    eprintln!("block proof: {} bytes; batch proof: {} bytes", block.bytes.len(), b1.bytes.len());
    let verifier = BlockVerifier::new(&circuits);
    let expected = BlockPublicInputs { old_root: w1.old_root, new_root: w2.new_root, commitment: ZERO_DIGEST };
    verifier.verify(&block.bytes, &expected).expect("valid block");

    let mut g = c.benchmark_group("aggregation");
    g.sample_size(10);
    // Each node on each prover, in one run: stock plonky2 is the baseline.
    for prover in benches::provers() {
        let wrap = AggJob::Wrap { batch: b1.clone() };
        g.bench_function(format!("wrap_node/{}", prover.name()), |b| {
            b.iter(|| circuits.run(&prover, &wrap).expect("wrap"))
        });
        g.bench_function(format!("merge_node/{}", prover.name()), |b| {
            b.iter(|| circuits.run(&prover, &merge_job).expect("merge"))
        });
    }
    g.bench_function("verify_block", |b| b.iter(|| verifier.verify(&block.bytes, &expected).expect("verify")));
    g.finish();
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
