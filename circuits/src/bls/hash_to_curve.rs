//! Hashing to G1 of BN254: `BN254G1_XMD:SHA-256_SVDW_RO_` (RFC 9380 with the Shallue–van de
//! Woestijne map, the one suite the RFC's method gives for a curve with `a = 0` and no usable
//! isogeny; gnark and constantine implement the same).
//!
//! `hash_to_field` is expand_message_xmd with SHA-256, two field elements of 48 bytes each per
//! message (written here: arkworks' `DefaultFieldHasher` pads with its element length instead of
//! SHA-256's 64-byte block, which only agrees with the RFC when the two are equal, as on
//! BLS12-381, and not on BN254); each is mapped with the straight-line SVDW map (RFC 9380 §F.1, Z = 1);
//! the two points are added. G1 of BN254 has cofactor 1, so no clearing is needed.

use std::sync::OnceLock;

use ark_bn254::{Fq, G1Affine, G1Projective};
use ark_ff::{BigInteger, Field, One, PrimeField, Zero};
use sha2::{Digest, Sha256};

/// The curve constant `b` of `y² = x³ + 3`.
fn b() -> Fq {
    Fq::from(3u64)
}

fn g(x: Fq) -> Fq {
    x.square() * x + b()
}

/// `sgn0` of RFC 9380 for a prime field: the parity of the canonical value.
fn sgn0(x: &Fq) -> bool {
    x.into_bigint().is_odd()
}

struct Constants {
    c1: Fq,
    c2: Fq,
    c3: Fq,
    c4: Fq,
}

/// The SVDW constants for Z = 1: `c1 = g(Z)`, `c2 = −Z/2`, `c3 = sqrt(−g(Z)·3Z²)` with
/// `sgn0(c3) = 0`, `c4 = −4·g(Z)/(3Z²)`.
fn constants() -> &'static Constants {
    static C: OnceLock<Constants> = OnceLock::new();
    C.get_or_init(|| {
        let z = Fq::one();
        let c1 = g(z);
        let two = Fq::from(2u64);
        let three_z2 = Fq::from(3u64) * z.square();
        let c2 = -z * two.inverse().unwrap_or_default();
        let mut c3 = (-c1 * three_z2).sqrt().unwrap_or_default();
        if sgn0(&c3) {
            c3 = -c3;
        }
        let c4 = -Fq::from(4u64) * c1 * three_z2.inverse().unwrap_or_default();
        Constants { c1, c2, c3, c4 }
    })
}

/// The SVDW map's three candidate x-coordinates for `u` (RFC 9380 §6.6.1, Z = 1).
fn candidates(u: Fq) -> [Fq; 3] {
    let c = constants();
    let tv1 = u.square() * c.c1;
    let tv2 = Fq::one() + tv1;
    let tv1 = Fq::one() - tv1;
    let tv3 = (tv1 * tv2).inverse().unwrap_or(Fq::zero());
    let tv4 = u * tv1 * tv3 * c.c3;
    [c.c2 - tv4, c.c2 + tv4, (tv2.square() * tv3).square() * c.c4 + Fq::one()]
}

/// The SVDW map of one field element to a point of G1.
pub fn map_to_curve(u: Fq) -> G1Affine {
    let [x1, x2, x3] = candidates(u);
    // The first of x1, x2, x3 whose g is a square, as the specification's is_square tests pick
    // it, with a root of that g. p ≡ 3 (mod 4), so `sqrt` is one exponentiation that fails on a
    // non-square: it is the test too, where a Legendre symbol for each of x1 and x2 and then a
    // root took three. (g is never 0 on this curve of prime order, so no zero case.) One of the
    // three is a square, so the last root exists; which root comes does not matter, the sign is
    // set below.
    let root = |x: Fq| g(x).sqrt().map(|y| (x, y));
    let (x, mut y) = root(x1).or_else(|| root(x2)).unwrap_or_else(|| (x3, g(x3).sqrt().unwrap_or_default()));
    if sgn0(&u) != sgn0(&y) {
        y = -y;
    }
    G1Affine::new_unchecked(x, y)
}

/// Bytes per field element: `ceil((ceil(log2 p) + 128) / 8)`.
const L: usize = 48;

/// `expand_message_xmd` with SHA-256 (RFC 9380 §5.3.1), for `len ≤ 255·32` and a DST of at most
/// 255 bytes (longer tags are hashed first, as the RFC prescribes).
pub fn expand_message_xmd(msg: &[u8], dst: &[u8], len: usize) -> Vec<u8> {
    let long_dst;
    let dst = if dst.len() > 255 {
        long_dst = Sha256::new().chain_update(b"H2C-OVERSIZE-DST-").chain_update(dst).finalize();
        &long_dst[..]
    } else {
        dst
    };
    let dst_prime = [dst, &[dst.len() as u8]].concat();
    let ell = len.div_ceil(32);
    let b0 = Sha256::new()
        .chain_update([0u8; 64])
        .chain_update(msg)
        .chain_update([(len >> 8) as u8, len as u8, 0])
        .chain_update(&dst_prime)
        .finalize();
    let mut out = Vec::with_capacity(ell * 32);
    let mut prev = Sha256::new().chain_update(b0).chain_update([1u8]).chain_update(&dst_prime).finalize();
    out.extend_from_slice(&prev);
    for i in 2..=ell {
        let mixed: Vec<u8> = b0.iter().zip(prev.iter()).map(|(a, b)| a ^ b).collect();
        prev = Sha256::new().chain_update(mixed).chain_update([i as u8]).chain_update(&dst_prime).finalize();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

/// The two field elements `hash_to_field(msg, 2)`.
pub fn hash_to_field(msg: &[u8], dst: &[u8]) -> [Fq; 2] {
    let bytes = expand_message_xmd(msg, dst, 2 * L);
    [Fq::from_be_bytes_mod_order(&bytes[..L]), Fq::from_be_bytes_mod_order(&bytes[L..])]
}

/// `hash_to_curve(msg)` in G1 with the domain separation tag `dst`.
pub fn hash_to_g1(msg: &[u8], dst: &[u8]) -> G1Affine {
    let [u0, u1] = hash_to_field(msg, dst);
    let p: G1Projective = map_to_curve(u0) + map_to_curve(u1);
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::BigInt;

    fn fq(hex: &str) -> Fq {
        let hex = hex.trim_start_matches("0x");
        let padded = format!("{hex:0>64}");
        let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
        Fq::from_be_bytes_mod_order(&bytes)
    }

    /// The map's choice as RFC 9380 (§6.6.1) writes it: is_square by Legendre symbol for x1 and
    /// x2, then the root of the chosen one. The map above must give the same point for every
    /// input, and the inputs below take each of the three branches.
    fn map_as_specified(u: Fq) -> (G1Affine, usize) {
        let [x1, x2, x3] = candidates(u);
        let e1 = g(x1).legendre().is_qr();
        let e2 = g(x2).legendre().is_qr() && !e1;
        let (x, branch) = if e1 {
            (x1, 1)
        } else if e2 {
            (x2, 2)
        } else {
            (x3, 3)
        };
        let mut y = g(x).sqrt().expect("a square");
        if sgn0(&u) != sgn0(&y) {
            y = -y;
        }
        (G1Affine::new_unchecked(x, y), branch)
    }

    #[test]
    fn the_map_picks_the_point_the_specification_does() {
        let mut taken = [0usize; 4];
        for i in 0..3000u64 {
            let [u, _] = hash_to_field(&i.to_le_bytes(), b"map test");
            let (expected, branch) = map_as_specified(u);
            assert_eq!(map_to_curve(u), expected, "u from {i}");
            taken[branch] += 1;
        }
        assert!(taken[1..].iter().all(|&n| n > 0), "every branch taken: {taken:?}");
    }

    /// The published test vectors of `BN254G1_XMD:SHA-256_SVDW_RO_` (as in gnark-crypto's suite).
    #[test]
    fn matches_the_reference_vectors() {
        let dst = b"QUUX-V01-CS02-with-BN254G1_XMD:SHA-256_SVDW_RO_";
        let cases = [
            (
                "",
                "0x2f87b81d9d6ef05ad4d249737498cc27e1bd485dca804487844feb3c67c1a9b5",
                "0x6de2d0d7c0d9c7a5a6c0b74675e7543f5b98186b5dbf831067449000b2b1f8e",
                "0xe449b959abbd0e5ab4c873eaeb1ccd887f1d9ad6cd671fd72cb8d77fb651892",
                "0xa976ab906170db1f9638d376514dbf8c42aef256a54bbd48521f20749e59e86",
                "0x2925ead66b9e68bfc309b014398640ab55f6619ab59bc1fab2210ad4c4d53d5",
            ),
            (
                "abc",
                "0x11945105b5e3d3b9392b5a2318409cbc28b7246aa47fa30da5739907737799a9",
                "0x1255fc9ad5a6e0fb440916f091229bda611c41be2f2283c3d8f98c596be4c8c9",
                "0x1452c8cc24f8dedc25b24d89b87b64e25488191cecc78464fea84077dd156f8d",
                "0x23f717bee89b1003957139f193e6be7da1df5f1374b26a4643b0378b5baf53d1",
                "0x4142f826b71ee574452dbc47e05bc3e1a647478403a7ba38b7b93948f4e151d",
            ),
        ];
        for (msg, u0, u1, q0x, px, py) in cases {
            let [a, b] = hash_to_field(msg.as_bytes(), dst);
            assert_eq!((a, b), (fq(u0), fq(u1)), "hash_to_field({msg:?})");
            assert_eq!(map_to_curve(a).x, fq(q0x), "map_to_curve({msg:?})");
            let p = hash_to_g1(msg.as_bytes(), dst);
            assert_eq!((p.x, p.y), (fq(px), fq(py)), "hash_to_curve({msg:?})");
        }
    }

    #[test]
    fn points_are_on_the_curve_and_differ() {
        let a = hash_to_g1(b"one", b"T");
        let b = hash_to_g1(b"two", b"T");
        let c = hash_to_g1(b"one", b"U");
        assert!(a.is_on_curve() && b.is_on_curve() && c.is_on_curve());
        assert!(a != b && a != c);
        let _ = BigInt::<4>::zero();
    }
}
