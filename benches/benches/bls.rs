//! BLS verification rates: one signature; reading a public key from a peer's bytes and from
//! our own stored ones; the settlement node's aggregate check of 1 000 and
//! 10 000 messages; the sequencer's batch check of 1 000. Each with every message from a
//! different signer and no key prepared beforehand (the worst case, `distinct_cold`), with those
//! signers' keys kept prepared from an earlier check (`distinct_warm`), and with 64 signers
//! (`64_signers`: a signer's terms are summed before one Miller loop).
//!
//! `cargo bench -p benches --bench bls`

use circuits::bls::batch::{find_invalid, SignedMessage};
use circuits::bls::{aggregate, aggregate_verify, verify, KeyCache, PublicKey, SecretKey, Signature};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

/// `n` messages signed by `signers` keys in turn.
fn signed(n: usize, signers: usize) -> (Vec<(PublicKey, Vec<u8>)>, Vec<Signature>) {
    let keys: Vec<(SecretKey, PublicKey)> = (0..signers)
        .into_par_iter()
        .map(|i| {
            let sk = SecretKey::from_seed(format!("bench-{i}").as_bytes());
            let pk = sk.public_key();
            (sk, pk)
        })
        .collect();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let (sk, pk) = &keys[i % signers];
            let m = format!("transaction {i}").into_bytes();
            let s = sk.sign(&m);
            ((*pk, m), s)
        })
        .unzip()
}

fn bls(c: &mut Criterion) {
    let mut g = c.benchmark_group("bls");
    g.sample_size(10);
    let (one, sig) = signed(1, 1);
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_single", |b| b.iter(|| verify(&one[0].0, &one[0].1, &sig[0]).expect("valid")));
    // Reading a key: from a peer (every check), and as stored by us after that check.
    let stored = one[0].0.to_bytes();
    g.bench_function("public_key_from_bytes", |b| b.iter(|| PublicKey::from_bytes(&stored).expect("valid")));
    g.bench_function("public_key_from_stored_bytes", |b| {
        b.iter(|| PublicKey::from_stored_bytes(&stored).expect("valid"))
    });
    for (n, signers, cases) in
        [(1_000usize, 1_000, &["cold", "warm"][..]), (1_000, 64, &["cold"]), (10_000, 10_000, &["cold"])]
    {
        let (items, sigs) = signed(n, signers);
        let agg = aggregate(&sigs);
        let refs: Vec<(PublicKey, &[u8])> = items.iter().map(|(k, m)| (*k, &m[..])).collect();
        let batch: Vec<SignedMessage> = items
            .iter()
            .zip(&sigs)
            .map(|((k, m), s)| SignedMessage { public_key: *k, message: m.clone(), signature: *s })
            .collect();
        let who = if signers == n { "distinct".to_string() } else { format!("{signers}_signers") };
        g.throughput(Throughput::Elements(n as u64));
        for case in cases {
            let name = if signers == n { format!("{who}_{case}") } else { who.clone() };
            // Cold: a cache that keeps nothing. Warm: one that has seen these keys.
            let keys = KeyCache::new(if *case == "warm" { 2 * signers } else { 0 });
            g.bench_function(format!("aggregate_verify_{n}_{name}"), |b| {
                b.iter(|| aggregate_verify(&refs, &agg, &keys).expect("valid"))
            });
            if n == 1_000 {
                let mut rng = StdRng::seed_from_u64(2);
                g.bench_function(format!("batch_check_{n}_{name}"), |b| {
                    b.iter(|| assert!(find_invalid(&batch, &keys, &mut rng).is_empty()))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bls);
criterion_main!(benches);
