//! Shared pieces of the benchmarks: synthetic transaction loads from the devnet genesis.

use circuits::genesis::DEVNET_TOKENS;
use circuits::tx::{POP_LEN, PUBKEY_LEN};
use circuits::{Direction, Register, Swap, Transfer, Tx};

/// `n` valid transactions for a devnet genesis of `accounts` accounts: transfers, a share
/// `swap_ratio` of swaps, and one register every 64. Deterministic; nonces are tracked, and
/// amounts stay far below the devnet balances so every transaction applies.
pub fn mixed_load(n: usize, accounts: u32, swap_ratio: f64, pubkey: &dyn Fn(u32) -> [u8; PUBKEY_LEN]) -> Vec<Tx> {
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
                return Tx::Register(Register { account: next_id, pubkey: pubkey(next_id), pop: [0; POP_LEN] });
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
