//! BLS verification rates: one signature, aggregates of 1 000 and 10 000 distinct messages, and
//! the sequencer's batch check.
//!
//! `cargo bench -p benches --bench bls`

use circuits::bls::batch::{find_invalid, SignedMessage};
use circuits::bls::{aggregate, aggregate_verify, verify, PublicKey, SecretKey, Signature};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn signed(n: usize) -> (Vec<(PublicKey, Vec<u8>)>, Vec<Signature>) {
    let mut rng = StdRng::seed_from_u64(1);
    let keys: Vec<SecretKey> = (0..64).map(|_| SecretKey::random(&mut rng)).collect();
    (0..n)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let m = format!("transaction {i}").into_bytes();
            let s = k.sign(&m);
            ((k.public_key(), m), s)
        })
        .unzip()
}

fn bls(c: &mut Criterion) {
    let mut g = c.benchmark_group("bls");
    g.sample_size(10);
    let (one, sig) = signed(1);
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_single", |b| b.iter(|| verify(&one[0].0, &one[0].1, &sig[0]).expect("valid")));
    for n in [1_000usize, 10_000] {
        let (signers, sigs) = signed(n);
        let agg = aggregate(&sigs);
        let refs: Vec<(PublicKey, &[u8])> = signers.iter().map(|(k, m)| (*k, &m[..])).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("aggregate_verify_{n}"), |b| b.iter(|| aggregate_verify(&refs, &agg).expect("valid")));
        if n == 1_000 {
            let items: Vec<SignedMessage> = signers
                .iter()
                .zip(&sigs)
                .map(|((k, m), s)| SignedMessage { public_key: *k, message: m.clone(), signature: *s })
                .collect();
            let mut rng = StdRng::seed_from_u64(2);
            g.bench_function("batch_check_1000_all_valid", |b| {
                b.iter(|| assert!(find_invalid(&items, &mut rng).is_empty()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bls);
criterion_main!(benches);
