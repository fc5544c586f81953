//! `amount_out` and its circuit limbs against a plain reference: the product formed in 256 bits
//! and divided bit by bit.

use circuits::swap::{amount_out, SwapLimbs};
use proptest::prelude::*;

/// (hi, lo) of a·b.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & u128::from(u64::MAX));
    let (b1, b0) = (b >> 64, b & u128::from(u64::MAX));
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & u128::from(u64::MAX)) + (p10 & u128::from(u64::MAX));
    let lo = (p00 & u128::from(u64::MAX)) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// floor((hi·2^128 + lo) / d) by schoolbook binary division; panics if the quotient exceeds u128.
fn div_wide(hi: u128, lo: u128, d: u128) -> u128 {
    let mut rem: u128 = 0;
    let mut q: u128 = 0;
    for i in (0..256).rev() {
        let bit = if i >= 128 { (hi >> (i - 128)) & 1 } else { (lo >> i) & 1 };
        let overflow = rem >> 127 == 1;
        rem = (rem << 1) | bit;
        q <<= 1;
        if overflow || rem >= d {
            rem = rem.wrapping_sub(d);
            q |= 1;
        }
    }
    q
}

fn reference(amount_in: u64, r_in: u64, r_out: u64, fee: u16) -> u64 {
    let f = 10_000 - u128::from(fee);
    let a = u128::from(amount_in) * f;
    let d = u128::from(r_in) * 10_000 + a;
    let (hi, lo) = mul_wide(a, u128::from(r_out));
    u64::try_from(div_wide(hi, lo, d)).expect("below r_out")
}

fn check(amount_in: u64, r_in: u64, r_out: u64, fee: u16) {
    let expected = reference(amount_in, r_in, r_out, fee);
    assert_eq!(
        amount_out(amount_in, r_in, r_out, fee),
        Some(expected),
        "in={amount_in} r_in={r_in} r_out={r_out} fee={fee}"
    );
    let limbs = SwapLimbs::compute(amount_in, 10_000 - u64::from(fee), r_in, r_out).expect("limbs");
    assert_eq!(limbs.out(), expected);
}

#[test]
fn edges() {
    let m = u64::MAX;
    for &(i, a, b) in &[
        (1, 1, 1),
        (1, 1, m),
        (m, 1, m),
        (m, m, m),
        (m, m, 1),
        (1, m, m),
        (1, m, 1),
        (m - 1, 2, m - 3),
        (1 << 32, 1 << 32, 1 << 32),
        ((1 << 32) - 1, (1 << 32) + 1, (1 << 63) + 5),
    ] {
        for fee in [0, 1, 30, 9_999] {
            check(i, a, b, fee);
        }
    }
    // Outputs that round to zero: a tiny trade against a deep pool.
    assert_eq!(amount_out(1, 1 << 40, 1 << 40, 30), Some(0));
    assert_eq!(amount_out(1, 1, 1, 9_999), Some(0));
    // Rounding is in the pool's favour: the output never reaches the reserve.
    assert_eq!(amount_out(m, 1, m, 0), Some(m - 1));
    // An empty pool with no input has no price; a fee of 100 % is refused.
    assert_eq!(amount_out(0, 0, 5, 30), None);
    assert_eq!(amount_out(5, 5, 5, 10_000), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn matches_reference(i in 1u64.., r_in in 1u64.., r_out in 0u64.., fee in 0u16..10_000) {
        check(i, r_in, r_out, fee);
    }

    #[test]
    fn matches_reference_small(i in 1u64..1000, r_in in 1u64..1000, r_out in 0u64..1000, fee in 0u16..10_000) {
        check(i, r_in, r_out, fee);
        // Small values fit a plain u128 formula.
        let f = 10_000 - u128::from(fee);
        let plain = (u128::from(i) * f * u128::from(r_out)) / (u128::from(r_in) * 10_000 + u128::from(i) * f);
        prop_assert_eq!(u128::from(amount_out(i, r_in, r_out, fee).unwrap_or(u64::MAX)), plain);
    }
}
