//! The multi-pairing behind every signature check, and what makes it cheaper than arkworks'
//! generic one for our checks.
//!
//! A check is `Π e(P_i, Q_i) = 1` over G1 points `P_i` and G2 keys `Q_i`. Three things are done
//! before and around the Miller loop (docs/bls.md, "The pairing check"):
//! - terms under the same key are added first: `e(P, Q)·e(P', Q) = e(P + P', Q)`, an identity, so
//!   the product is the same and each distinct key costs one Miller loop, not one per signature;
//! - a key's line coefficients (its [`G2Prepared`], about a quarter of a check's time) come from a
//!   bounded [`KeyCache`] of the busy keys, prepared on a miss;
//! - the Miller loop shares one accumulator, and so its squarings, across all the pairs a thread
//!   takes (arkworks' shares it across four).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ark_bn254::{Bn254, Config, Fq12, G1Affine, G1Projective, G2Affine};
use ark_ec::bn::g2::EllCoeff;
use ark_ec::bn::{BnConfig, G2Prepared, TwistType};
use ark_ec::pairing::{MillerLoopOutput, Pairing};
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{CyclotomicMultSubgroup, Field, One, Zero};
use rayon::prelude::*;

/// A G2 point's line coefficients for the Miller loop.
pub type PreparedKey = G2Prepared<Config>;

/// Keys the services keep prepared: about 70 MB at most, and at the sequencer's check of a batch
/// of 256 every 2 ms, the keys of about the last 8 batches' worth of distinct senders.
pub const SERVICE_KEY_CACHE: usize = 4096;

/// The prepared form of the busiest keys, bounded.
///
/// Two generations of at most `capacity / 2` keys each: a key found in the old one moves to the
/// young one, and when the young one is full the old one is dropped and the young one becomes
/// old. So a key used again within about `capacity / 2` other keys stays, without a
/// recency list to maintain, and at most `capacity` keys are kept (about 17 KB each).
pub struct KeyCache {
    generation: usize,
    inner: Mutex<Generations>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Generations {
    young: HashMap<G2Affine, Arc<PreparedKey>>,
    old: HashMap<G2Affine, Arc<PreparedKey>>,
}

impl KeyCache {
    /// A cache of at most `capacity` keys; below 2, none is kept and every check prepares its keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            generation: capacity / 2,
            inner: Mutex::new(Generations::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// `q`'s line coefficients: kept ones, or prepared now (outside the lock) and kept.
    pub fn prepared(&self, q: &G2Affine) -> Arc<PreparedKey> {
        let (neg_g2, neg_g2_prepared) = neg_g2_prepared();
        if q == neg_g2 {
            return neg_g2_prepared.clone();
        }
        if self.generation == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(PreparedKey::from(*q));
        }
        if let Some(p) = self.lookup(q) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return p;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(PreparedKey::from(*q));
        let mut g = self.lock();
        g.insert(*q, p.clone(), self.generation);
        p
    }

    fn lookup(&self, q: &G2Affine) -> Option<Arc<PreparedKey>> {
        let mut g = self.lock();
        if let Some(p) = g.young.get(q) {
            return Some(p.clone());
        }
        let p = g.old.remove(q)?;
        g.insert(*q, p.clone(), self.generation);
        Some(p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps are consistent after every statement that changes them, so a panic elsewhere
        // while the lock was held leaves nothing to repair.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys kept now.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache, and lookups that prepared their key, since it was made.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

impl Generations {
    fn insert(&mut self, q: G2Affine, p: Arc<PreparedKey>, generation: usize) {
        if self.young.len() >= generation && !self.young.contains_key(&q) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(q, p);
    }
}

/// `−g2` and its line coefficients: every signature check pairs the signatures with it.
pub(crate) fn neg_g2_prepared() -> &'static (G2Affine, Arc<PreparedKey>) {
    static NEG_G2: OnceLock<(G2Affine, Arc<PreparedKey>)> = OnceLock::new();
    NEG_G2.get_or_init(|| {
        let q = -G2Affine::generator();
        (q, Arc::new(PreparedKey::from(q)))
    })
}

/// Whether `Π e(P_i, Q_i) = 1` for the `terms` `(P_i, Q_i)`: terms under one key summed, keys
/// prepared through `keys`, the Miller loops split across rayon threads, one final exponentiation.
pub fn product_is_one(terms: &[(G1Projective, G2Affine)], keys: &KeyCache) -> bool {
    let mut index: HashMap<G2Affine, usize> = HashMap::with_capacity(terms.len());
    let mut sums: Vec<G1Projective> = Vec::with_capacity(terms.len());
    let mut qs: Vec<G2Affine> = Vec::with_capacity(terms.len());
    for (p, q) in terms {
        match index.get(q) {
            Some(&i) => sums[i] += p,
            None => {
                index.insert(*q, sums.len());
                sums.push(*p);
                qs.push(*q);
            }
        }
    }
    // To affine form: points that came affine and were not summed need no inversion.
    let ps: Vec<G1Affine> = if sums.iter().all(|p| p.z.is_one() || p.is_zero()) {
        sums.iter().map(|p| p.into_affine()).collect()
    } else {
        G1Projective::normalize_batch(&sums)
    };
    // A pair with the identity on either side pairs to one.
    let (ps, qs): (Vec<G1Affine>, Vec<G2Affine>) =
        ps.into_iter().zip(qs).filter(|(p, q)| !p.is_zero() && !q.is_zero()).unzip();
    // The keys not kept are prepared first, one task each, so the threads share them evenly.
    let prepared: Vec<Arc<PreparedKey>> = qs.par_iter().map(|q| keys.prepared(q)).collect();
    let pairs: Vec<(G1Affine, &PreparedKey)> = ps.into_iter().zip(prepared.iter().map(|q| &**q)).collect();
    // One share of the Miller loops per thread: each share squares its accumulator once a step
    // (about 110 µs a share on dev-2c, against about 140 µs of lines a pair), the price of
    // finishing sooner.
    let chunk = pairs.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
    let f = pairs.par_chunks(chunk).map(miller_loop).reduce(Fq12::one, |a, b| a * b);
    Bn254::final_exponentiation(MillerLoopOutput(f)).is_some_and(|o| o.is_zero())
}

/// The product of the Miller loops of `pairs`, with one accumulator: the same value as arkworks'
/// `multi_miller_loop` (each doubling's squaring applies to the product of every pair's lines,
/// and the field is commutative), with one squaring per step for all the pairs instead of one
/// per four.
pub fn miller_loop(pairs: &[(G1Affine, &PreparedKey)]) -> Fq12 {
    let mut f = Fq12::one();
    let mut lines: Vec<_> = pairs.iter().map(|(p, q)| (p, q.ell_coeffs.iter())).collect();
    let mut step = |f: &mut Fq12| {
        for (p, coeffs) in lines.iter_mut() {
            // Every prepared key has a line for each step of the loop below, and two after it.
            let c = coeffs.next().expect("a prepared key has a line per step");
            ell(f, c, p);
        }
    };
    let bits = Config::ATE_LOOP_COUNT;
    for i in (1..bits.len()).rev() {
        if i != bits.len() - 1 {
            f.square_in_place();
        }
        step(&mut f);
        if bits[i - 1] != 0 {
            step(&mut f);
        }
    }
    if Config::X_IS_NEGATIVE {
        f.cyclotomic_inverse_in_place();
    }
    step(&mut f);
    step(&mut f);
    f
}

/// Multiplies `f` by the line `c` evaluated at `p`, as arkworks' `Bn::ell` does (private there).
fn ell(f: &mut Fq12, c: &EllCoeff<Config>, p: &G1Affine) {
    let (mut c0, mut c1, mut c2) = *c;
    match Config::TWIST_TYPE {
        TwistType::M => {
            c2.mul_assign_by_fp(&p.y);
            c1.mul_assign_by_fp(&p.x);
            f.mul_by_014(&c0, &c1, &c2);
        }
        TwistType::D => {
            c0.mul_assign_by_fp(&p.y);
            c1.mul_assign_by_fp(&p.x);
            f.mul_by_034(&c0, &c1, &c2);
        }
    }
}

#[cfg(test)]
mod tests {
    use ark_bn254::{Fr, G2Projective};
    use ark_ec::PrimeGroup;
    use ark_ff::UniformRand;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn g1(rng: &mut StdRng) -> G1Projective {
        G1Projective::generator() * Fr::rand(rng)
    }

    fn g2(rng: &mut StdRng) -> G2Affine {
        (G2Projective::generator() * Fr::rand(rng)).into_affine()
    }

    #[test]
    fn the_miller_loop_is_arkworks_one_to_the_bit() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in [1, 2, 5, 17] {
            let ps: Vec<G1Affine> = (0..n).map(|_| g1(&mut rng).into_affine()).collect();
            let qs: Vec<G2Affine> = (0..n).map(|_| g2(&mut rng)).collect();
            let prepared: Vec<PreparedKey> = qs.iter().map(|q| PreparedKey::from(*q)).collect();
            let pairs: Vec<(G1Affine, &PreparedKey)> = ps.iter().copied().zip(&prepared).collect();
            assert_eq!(miller_loop(&pairs), Bn254::multi_miller_loop(ps, qs).0, "{n} pairs");
        }
    }

    /// The check against arkworks' pairing of every term apart, on products that are one and
    /// products that are not, with keys repeated so that terms are summed.
    #[test]
    fn the_check_agrees_with_pairing_every_term_apart() {
        let mut rng = StdRng::seed_from_u64(2);
        let keys = KeyCache::new(8);
        let qs: Vec<G2Affine> = (0..5).map(|_| g2(&mut rng)).collect();
        for round in 0..6 {
            // Terms under five keys, then for each term (a·P, Q) a term (−a·P, Q), shuffled in:
            // the product is one; changing any one P makes it not.
            let mut terms: Vec<(G1Projective, G2Affine)> = (0..12).map(|i| (g1(&mut rng), qs[i % 5])).collect();
            let negs: Vec<_> = terms.iter().map(|(p, q)| (-*p, *q)).collect();
            terms.extend(negs);
            terms.rotate_left(round);
            let apart = |t: &[(G1Projective, G2Affine)]| {
                let (ps, qs): (Vec<G1Affine>, Vec<G2Affine>) = t.iter().map(|(p, q)| (p.into_affine(), *q)).unzip();
                Bn254::multi_pairing(ps, qs).is_zero()
            };
            assert!(apart(&terms));
            assert!(product_is_one(&terms, &keys), "round {round}");
            terms[round].0 += G1Projective::generator();
            assert!(!apart(&terms));
            assert!(!product_is_one(&terms, &keys), "round {round}, one term changed");
            // A term moved to another key: the sums per key change.
            terms[round].0 -= G1Projective::generator();
            let k = qs.iter().position(|q| *q == terms[round].1).expect("one of the keys");
            terms[round].1 = qs[(k + 1) % 5];
            assert!(!product_is_one(&terms, &keys), "round {round}, one term under another key");
        }
        // A sum that comes to the identity pairs to one, as a lone identity term does.
        let p = g1(&mut rng);
        assert!(product_is_one(&[(p, qs[0]), (-p, qs[0])], &keys));
        assert!(product_is_one(&[(G1Projective::default(), qs[1])], &keys));
    }

    #[test]
    fn the_cache_keeps_the_busy_keys_and_stays_bounded() {
        let mut rng = StdRng::seed_from_u64(3);
        let qs: Vec<G2Affine> = (0..10).map(|_| g2(&mut rng)).collect();
        let keys = KeyCache::new(4);
        for q in &qs[..2] {
            assert_eq!(*keys.prepared(q), PreparedKey::from(*q));
        }
        assert_eq!(keys.hits_and_misses(), (0, 2));
        assert_eq!(keys.len(), 2);
        // Two more: the first two move to the old generation and stay.
        keys.prepared(&qs[2]);
        keys.prepared(&qs[3]);
        assert_eq!(keys.len(), 4);
        // A hit in the old generation moves it to the young one, so it outlives its neighbour.
        assert_eq!(*keys.prepared(&qs[0]), PreparedKey::from(qs[0]));
        assert_eq!(keys.hits_and_misses(), (1, 4));
        for q in &qs[4..] {
            keys.prepared(q);
            assert!(keys.len() <= 4, "{} keys kept", keys.len());
        }
        // Keys seen long ago are gone; the last two are kept.
        let before = keys.hits_and_misses();
        keys.prepared(&qs[9]);
        keys.prepared(&qs[1]);
        assert_eq!(keys.hits_and_misses(), (before.0 + 1, before.1 + 1));
        // No cache: every key prepared, none kept; −g2 is always at hand.
        let none = KeyCache::new(0);
        none.prepared(&qs[0]);
        none.prepared(&qs[0]);
        none.prepared(&super::super::neg_g2());
        assert_eq!((none.len(), none.hits_and_misses()), (0, (0, 2)));
    }
}
