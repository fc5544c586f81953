//! Uniswap V2's `getAmountOut` in exact integer arithmetic, and the limb decomposition the
//! circuit uses to check it.
//!
//! `out = floor(in·f·r_out / (r_in·10000 + in·f))` with `f = 10000 − fee_bps`. The numerator can
//! reach 2^142, so it is never formed in one integer: see [`amount_out`].

use crate::state::BPS;

/// Swap output for `amount_in` against reserves `(reserve_in, reserve_out)` and a fee in basis
/// points. Rounds down (in the pool's favour). `None` when the fee is not below 10 000 or the
/// denominator is zero (an empty pool and a zero input).
pub fn amount_out(amount_in: u64, reserve_in: u64, reserve_out: u64, fee_bps: u16) -> Option<u64> {
    if u64::from(fee_bps) >= BPS {
        return None;
    }
    let f = u128::from(BPS - u64::from(fee_bps));
    let a = u128::from(amount_in) * f; // < 2^78
    let d = u128::from(reserve_in) * u128::from(BPS) + a; // < 2^79
    if d == 0 {
        return None;
    }
    // a·r_out = (a·r_hi)·2^32 + a·r_lo, each product below 2^110.
    let r_hi = u128::from(reserve_out >> 32);
    let r_lo = u128::from(reserve_out & 0xffff_ffff);
    let x = a * r_hi;
    let (q1, r1) = (x / d, x % d);
    let y = (r1 << 32) + a * r_lo; // < 2^111 + 2^110
    let q = (q1 << 32) + y / d;
    // a < d, so q < r_out ≤ u64::MAX.
    u64::try_from(q).ok()
}

/// Every value the circuit's swap check witnesses, in the limbs it range-checks.
///
/// With `B = 2^32` and `b = 2^16`:
/// - `A = in·f = Σ h_j b^j` (`h_4 < 2^14`), with carry `k0`;
/// - `D = r_in·10000 + A = d0 + d1·B + d2·B²`, with carries `e0, e1`;
/// - `out = Σ q_j b^j`, `rem = s0 + s1·B + s2·B²`, `D − 1 − rem = t0 + t1·B + t2·B²` with borrows `β`;
/// - `out·D + rem = A·r_out` column by column in base `b`, with signed carries `c_k` (stored
///   offset by [`CARRY_OFFSET`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapLimbs {
    /// `A` in 16-bit limbs.
    pub h: [u64; 5],
    /// Carry of `in_lo·f` into the second word.
    pub k0: u64,
    /// `D` in 32-bit limbs (`d[2]` is derived, below 2^16).
    pub d: [u64; 3],
    /// Carries of the `D` sum.
    pub e: [u64; 2],
    /// `out` in 16-bit limbs.
    pub q: [u64; 4],
    /// `rem` in 32-bit limbs.
    pub s: [u64; 3],
    /// `D − 1 − rem` in 32-bit limbs.
    pub t: [u64; 3],
    /// Borrows of `rem + 1 + t = D`.
    pub beta: [u64; 2],
    /// Column carries plus [`CARRY_OFFSET`].
    pub c: [u64; 7],
}

/// Offset that makes the signed column carries non-negative (they are below 2^35 in magnitude).
pub const CARRY_OFFSET: u64 = 1 << 35;
/// Bits of an offset column carry.
pub const CARRY_BITS: usize = 36;

impl SwapLimbs {
    /// Decomposes the check for `in = i0 + i1·2^32`, `f`, `r_in`, `r_out`. Requires `D > 0`.
    // The column sums index two limb arrays by i and k − 2i, as the schoolbook formula reads.
    #[allow(clippy::needless_range_loop)]
    pub fn compute(amount_in: u64, f: u64, reserve_in: u64, reserve_out: u64) -> Option<SwapLimbs> {
        let (i0, i1) = (amount_in & 0xffff_ffff, amount_in >> 32);
        let (n0, n1) = (reserve_in & 0xffff_ffff, reserve_in >> 32);
        let (o0, o1) = (reserve_out & 0xffff_ffff, reserve_out >> 32);
        let m16 = 0xffff;
        let m32 = 0xffff_ffff;
        let mut l = SwapLimbs::default();
        let lo = i0 * f; // < 2^46
        l.h[0] = lo & m16;
        l.h[1] = (lo >> 16) & m16;
        l.k0 = lo >> 32;
        let hi = i1 * f + l.k0;
        l.h[2] = hi & m16;
        l.h[3] = (hi >> 16) & m16;
        l.h[4] = hi >> 32;
        let a0 = l.h[0] + (l.h[1] << 16);
        let a1 = l.h[2] + (l.h[3] << 16);
        let a2 = l.h[4];
        let x0 = BPS * n0 + a0;
        l.d[0] = x0 & m32;
        l.e[0] = x0 >> 32;
        let x1 = BPS * n1 + a1 + l.e[0];
        l.d[1] = x1 & m32;
        l.e[1] = x1 >> 32;
        l.d[2] = a2 + l.e[1];
        let a = u128::from(amount_in) * u128::from(f);
        let d = u128::from(reserve_in) * u128::from(BPS) + a;
        if d == 0 {
            return None;
        }
        let out = {
            let fee_bps = u16::try_from(BPS.checked_sub(f)?).ok()?;
            amount_out(amount_in, reserve_in, reserve_out, fee_bps)?
        };
        // rem = a·r_out − out·d, computed in the same split form as `amount_out`.
        let rem = {
            let r_hi = u128::from(o1);
            let r_lo = u128::from(o0);
            let x = a * r_hi;
            let r1 = x % d;
            let y = (r1 << 32) + a * r_lo;
            y % d
        };
        for j in 0..4 {
            l.q[j] = (out >> (16 * j)) & m16;
        }
        l.s = [(rem as u64) & m32, ((rem >> 32) as u64) & m32, (rem >> 64) as u64];
        let t = d - 1 - rem;
        l.t = [(t as u64) & m32, ((t >> 32) as u64) & m32, (t >> 64) as u64];
        l.beta[0] = (l.s[0] + 1 + l.t[0]) >> 32;
        l.beta[1] = (l.s[1] + l.t[1] + l.beta[0]) >> 32;
        // Columns in base 2^16: D, rem and r_out sit at even positions.
        let dd = [l.d[0], l.d[1], l.d[2]];
        let ss = [l.s[0], l.s[1], l.s[2]];
        let oo = [o0, o1];
        let mut carry: i128 = 0;
        for k in 0..8usize {
            let mut lhs: i128 = 0;
            let mut rhs: i128 = 0;
            for i in 0..3 {
                if k >= 2 * i && k - 2 * i < 4 {
                    lhs += i128::from(l.q[k - 2 * i]) * i128::from(dd[i]);
                }
            }
            if k % 2 == 0 && k / 2 < 3 {
                lhs += i128::from(ss[k / 2]);
            }
            for i in 0..2 {
                if k >= 2 * i && k - 2 * i < 5 {
                    rhs += i128::from(l.h[k - 2 * i]) * i128::from(oo[i]);
                }
            }
            let total = lhs - rhs + carry;
            if k == 7 {
                debug_assert_eq!(total, 0);
            } else {
                debug_assert_eq!(total % (1 << 16), 0);
                carry = total >> 16;
                l.c[k] = u64::try_from(carry + i128::from(CARRY_OFFSET)).ok()?;
            }
        }
        Some(l)
    }

    /// The output amount the limbs encode.
    pub fn out(&self) -> u64 {
        self.q[0] | (self.q[1] << 16) | (self.q[2] << 32) | (self.q[3] << 48)
    }
}
