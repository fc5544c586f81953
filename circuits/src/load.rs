//! Synthetic traffic from the devnet genesis: what the devnet, the benchmarks and the tests send.

use crate::genesis::{devnet_key, DEVNET_TOKENS};
use crate::tx::{Direction, Register, Swap, Transfer, Tx};

/// `n` valid transactions for a devnet genesis of `accounts` accounts, in order: transfers, a
/// share `swap_ratio` of swaps, and one `Register` every 64 (of fresh ids from `accounts + 1`,
/// with their devnet keys and proofs of possession). Deterministic; nonces are tracked; amounts
/// stay far below the devnet balances, so every transaction applies.
pub fn mixed_load(n: usize, accounts: u32, swap_ratio: f64) -> Vec<Tx> {
    let accounts = accounts.max(2);
    let mut nonces = vec![0u32; accounts as usize];
    let mut next_id = accounts;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let from = 1 + (rand() % u64::from(accounts - 1)) as u32;
            let r = rand();
            if i % 64 == 63 {
                next_id += 1;
                let sk = devnet_key(next_id);
                return Tx::Register(Register {
                    account: next_id,
                    pubkey: sk.public_key().to_bytes(),
                    pop: sk.proof_of_possession().to_bytes(),
                });
            }
            let nonce = nonces[from as usize];
            nonces[from as usize] += 1;
            if (r % 1000) as f64 / 1000.0 < swap_ratio {
                Tx::Swap(Swap {
                    account: from,
                    pool: (rand() % 5) as u32,
                    direction: if r & 1 == 0 { Direction::AToB } else { Direction::BToA },
                    amount_in: 10_000 + rand() % 1_000_000,
                    min_out: 1,
                    fee: rand() % 10,
                    nonce,
                })
            } else {
                Tx::Transfer(Transfer {
                    from,
                    to: (rand() % u64::from(accounts)) as u32,
                    token: (rand() % u64::from(DEVNET_TOKENS)) as u16,
                    amount: 1 + rand() % 1_000_000,
                    fee: rand() % 10,
                    nonce,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Executor, Genesis};

    #[test]
    fn every_transaction_of_the_load_applies() {
        let txs = mixed_load(200, 16, 0.3);
        let mut ex = Executor::new(Genesis::devnet(16).build().expect("genesis"), 256);
        for tx in &txs {
            ex.apply(tx).expect("the load is valid");
        }
        assert!(txs.iter().any(|t| matches!(t, Tx::Swap(_))) && txs.iter().any(|t| matches!(t, Tx::Register(_))));
        for tx in txs.iter().filter_map(|t| if let Tx::Register(r) = t { Some(r) } else { None }) {
            crate::bls::register_key(tx).expect("registers carry valid proofs of possession");
        }
    }
}
