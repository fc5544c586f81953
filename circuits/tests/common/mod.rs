//! Random transaction sequences, shared by the executor's property test (many sequences, no
//! proofs) and the circuit's (a few, each proven).

use circuits::genesis::{devnet_pubkey, DEVNET_BALANCE};
use circuits::*;
use proptest::prelude::*;

/// Accounts, tokens and pools the sequences name: one past the devnet's of each, and account
/// ids up to 11, so that unknown ones and registrations come up.
pub const ACCOUNTS: u32 = 12;
pub const TOKENS: u16 = 5;
pub const POOLS: u32 = 6;

#[derive(Clone, Debug)]
pub enum Op {
    Transfer { from: u32, to: u32, token: u16, amount: u64, fee: u64, nonce_skew: u32 },
    Swap { account: u32, pool: u32, back: bool, amount_in: u64, min_out: u64, fee: u64, nonce_skew: u32 },
    Register { account: u32 },
}

/// Mostly plausible operations on `Genesis::devnet(8)` with a share of invalid ones: unknown
/// ids, wrong nonces, amounts beyond balances, zero amounts, unreachable minimum outputs, taken
/// ids.
pub fn op() -> impl Strategy<Value = Op> {
    let amount = prop_oneof![3 => 1u64..1_000_000, 1 => Just(0u64), 1 => Just(DEVNET_BALANCE), 1 => DEVNET_BALANCE..];
    let nonce_skew = prop_oneof![6 => Just(0u32), 1 => 1u32..3];
    prop_oneof![
        4 => (0u32..8, 0u32..9, 0u16..TOKENS, amount.clone(), 0u64..100, nonce_skew.clone())
            .prop_map(|(from, to, token, amount, fee, nonce_skew)| Op::Transfer { from, to, token, amount, fee, nonce_skew }),
        3 => (0u32..8, 0u32..POOLS, any::<bool>(), amount, prop_oneof![3 => Just(0u64), 1 => any::<u64>()], 0u64..100, nonce_skew)
            .prop_map(|(account, pool, back, amount_in, min_out, fee, nonce_skew)| Op::Swap { account, pool, back, amount_in, min_out, fee, nonce_skew }),
        1 => (5u32..ACCOUNTS).prop_map(|account| Op::Register { account }),
    ]
}

/// The transaction `op` names, with the sender's next nonce plus its skew.
pub fn to_tx(ex: &Executor, op: &Op) -> Tx {
    let nonce = |a: u32, skew: u32| ex.state().account(a).map_or(0, |r| r.nonce).wrapping_add(skew);
    match *op {
        Op::Transfer { from, to, token, amount, fee, nonce_skew } => {
            Tx::Transfer(Transfer { from, to, token, amount, fee, nonce: nonce(from, nonce_skew) })
        }
        Op::Swap { account, pool, back, amount_in, min_out, fee, nonce_skew } => Tx::Swap(Swap {
            account,
            pool,
            direction: if back { Direction::BToA } else { Direction::AToB },
            amount_in,
            min_out,
            fee,
            nonce: nonce(account, nonce_skew),
        }),
        Op::Register { account } => Tx::Register(Register { account, pubkey: devnet_pubkey(account), pop: [0; 64] }),
    }
}

/// Sum of every balance and reserve of each token, the open batch's fees counted in the fee
/// token's: conserved by every transaction and by every seal.
pub fn supply(state: &State, pending_fees: u64) -> Vec<u128> {
    (0..TOKENS)
        .map(|t| {
            let balances: u128 = (0..ACCOUNTS).map(|a| u128::from(state.balance(a, t))).sum();
            let reserves: u128 = (0..POOLS)
                .filter_map(|p| state.pool(p))
                .map(|p| {
                    u128::from(if p.token_a == t { p.reserve_a } else { 0 })
                        + u128::from(if p.token_b == t { p.reserve_b } else { 0 })
                })
                .sum();
            balances + reserves + if t == 0 { u128::from(pending_fees) } else { 0 }
        })
        .collect()
}
