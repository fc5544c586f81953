//! Index arithmetic of plonky2's layouts.

/// The low `bits` bits of `i`, reversed.
pub fn reverse_bits(i: usize, bits: usize) -> usize {
    if bits == 0 {
        0
    } else {
        i.reverse_bits() >> (usize::BITS as usize - bits)
    }
}

/// Position, in the digest buffer of one cap subtree of height `k`, of the node at height `h`
/// (0 = leaf digests, at most `k − 1`) with index `j` among its level.
///
/// plonky2 lays a subtree out recursively as `left subtree ‖ left child ‖ right child ‖ right
/// subtree` (`fill_subtree`), so the children of a subtree with `2^k` leaves sit at `2^k − 2`
/// and `2^k − 1`, the left subtree's nodes before them and the right subtree's after.
pub fn digest_position(k: usize, h: usize, j: usize) -> usize {
    debug_assert!(h < k && j < 1 << (k - h));
    let mut offset = 0;
    let mut k = k;
    let mut j = j;
    loop {
        let n = 1usize << k;
        if h == k - 1 {
            return offset + n - 2 + j;
        }
        let half = 1usize << (k - 1 - h);
        if j >= half {
            offset += n;
            j -= half;
        }
        k -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_cover_the_buffer_once() {
        for k in 1..8 {
            let mut seen = vec![false; 2 * ((1 << k) - 2) + 2];
            for h in 0..k {
                for j in 0..1 << (k - h) {
                    let p = digest_position(k, h, j);
                    assert!(!seen[p], "k={k} h={h} j={j}");
                    seen[p] = true;
                }
            }
            assert!(seen.iter().all(|s| *s));
        }
    }
}
