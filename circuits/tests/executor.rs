//! The executor's rules: every transaction kind, every error, and that a rejection changes nothing.

use circuits::genesis::{devnet_pubkey, DEVNET_BALANCE, DEVNET_RESERVE};
use circuits::state::{FEE_TOKEN, OPERATOR_ACCOUNT};
use circuits::swap::amount_out;
use circuits::*;

mod common;

fn executor() -> Executor {
    Executor::new(Genesis::devnet(8).build().expect("genesis"), 16)
}

fn transfer(from: u32, to: u32, token: u16, amount: u64, fee: u64, nonce: u32) -> Tx {
    Tx::Transfer(Transfer { from, to, token, amount, fee, nonce })
}

fn swap(account: u32, pool: u32, direction: Direction, amount_in: u64, min_out: u64, nonce: u32) -> Tx {
    Tx::Swap(Swap { account, pool, direction, amount_in, min_out, fee: 1, nonce })
}

/// Applies `tx`, expects `err`, and checks nothing changed.
fn rejects(ex: &mut Executor, tx: Tx, err: TxError) {
    let state = ex.state().clone();
    let open = ex.open_len();
    let fees = ex.pending_fees();
    assert_eq!(ex.apply(&tx), Err(err));
    assert!(*ex.state() == state, "a rejected transaction changed the state");
    assert_eq!(ex.open_len(), open);
    assert_eq!(ex.pending_fees(), fees);
}

#[test]
fn transfer_moves_amount_and_defers_fee_to_the_batch_end() {
    let mut ex = executor();
    ex.apply(&transfer(1, 2, 1, 500, 7, 0)).expect("valid");
    let s = ex.state();
    assert_eq!(s.balance(1, 1), DEVNET_BALANCE - 500);
    assert_eq!(s.balance(2, 1), DEVNET_BALANCE + 500);
    assert_eq!(s.balance(1, FEE_TOKEN), DEVNET_BALANCE - 7);
    assert_eq!(s.account(1).map(|a| a.nonce), Some(1));
    assert_eq!(s.account(2).map(|a| a.nonce), Some(0));
    assert_eq!(s.balance(OPERATOR_ACCOUNT, FEE_TOKEN), DEVNET_BALANCE);
    let w = ex.seal_batch().expect("seal");
    assert_eq!(w.operator.fee_total, 7);
    assert_eq!(ex.state().balance(OPERATOR_ACCOUNT, FEE_TOKEN), DEVNET_BALANCE + 7);
    assert_eq!(w.new_root, ex.state().root());
}

#[test]
fn transfer_of_the_fee_token_pays_amount_then_fee() {
    let mut ex = executor();
    rejects(
        &mut ex,
        transfer(1, 2, FEE_TOKEN, DEVNET_BALANCE, 1, 0),
        TxError::InsufficientBalance { account: 1, token: FEE_TOKEN, needed: 1, available: 0 },
    );
    ex.apply(&transfer(1, 2, FEE_TOKEN, DEVNET_BALANCE - 1, 1, 0)).expect("exactly everything");
    assert_eq!(ex.state().balance(1, FEE_TOKEN), 0);
}

/// The fee token's balance is the account leaf's own: moving it touches no balance tree, and
/// each leaf hashes its record's balance; every other token is in the balance tree.
#[test]
fn the_fee_token_lives_in_the_account_leaf() {
    let mut ex = executor();
    let roots = |ex: &Executor| [1, 2, OPERATOR_ACCOUNT].map(|a| ex.state().balance_root(a));
    let before = roots(&ex);
    ex.apply(&transfer(1, 2, FEE_TOKEN, 1_000, 7, 0)).expect("valid");
    ex.seal_batch().expect("seal");
    assert_eq!(roots(&ex), before, "no balance tree moved");
    let s = ex.state();
    for a in [1, 2, OPERATOR_ACCOUNT] {
        let leaf = circuits::state::balances(a).leaf(&*s.store().nodes(), FEE_TOKEN.into());
        assert_eq!(leaf, circuits::hash::ZERO_DIGEST, "leaf 0 of a balance tree stays empty");
    }
    for (a, fee_balance) in
        [(1, DEVNET_BALANCE - 1_007), (2, DEVNET_BALANCE + 1_000), (OPERATOR_ACCOUNT, DEVNET_BALANCE + 7)]
    {
        let record = s.account(a).expect("exists");
        assert_eq!(record.fee_balance, fee_balance);
        assert_eq!(s.account_leaf(a), record.leaf(s.balance_root(a)));
        assert_eq!(circuits::state::ACCOUNTS.leaf(&*s.store().nodes(), a.into()), s.account_leaf(a), "the stored leaf");
    }
    ex.apply(&transfer(1, 2, 1, 1_000, 7, 1)).expect("valid");
    ex.seal_batch().expect("seal");
    assert_ne!(roots(&ex)[..2], before[..2], "token 1 is in the balance trees");
}

#[test]
fn self_transfer_only_pays_the_fee() {
    let mut ex = executor();
    ex.apply(&transfer(3, 3, 2, 1_000, 5, 0)).expect("valid");
    assert_eq!(ex.state().balance(3, 2), DEVNET_BALANCE);
    assert_eq!(ex.state().balance(3, FEE_TOKEN), DEVNET_BALANCE - 5);
    assert_eq!(ex.state().account(3).map(|a| a.nonce), Some(1));
}

#[test]
fn transfer_errors() {
    let mut ex = executor();
    rejects(&mut ex, transfer(1, 2, 1, 0, 1, 0), TxError::ZeroAmount);
    rejects(&mut ex, transfer(99, 2, 1, 5, 1, 0), TxError::UnknownAccount { account: 99 });
    rejects(&mut ex, transfer(1, 99, 1, 5, 1, 0), TxError::UnknownAccount { account: 99 });
    rejects(&mut ex, transfer(1, 2, 1, 5, 1, 3), TxError::BadNonce { account: 1, expected: 0, got: 3 });
    rejects(
        &mut ex,
        transfer(1, 2, 1, DEVNET_BALANCE + 1, 1, 0),
        TxError::InsufficientBalance { account: 1, token: 1, needed: DEVNET_BALANCE + 1, available: DEVNET_BALANCE },
    );
    rejects(
        &mut ex,
        transfer(1, 2, 1, 5, DEVNET_BALANCE + 1, 0),
        TxError::InsufficientBalance { account: 1, token: 0, needed: DEVNET_BALANCE + 1, available: DEVNET_BALANCE },
    );
    rejects(&mut ex, transfer(1, 2, 1024, 5, 1, 0), TxError::OutOfRange { field: "token", value: 1024, max: 1023 });
    rejects(
        &mut ex,
        transfer(1, 1 << 24, 1, 5, 1, 0),
        TxError::OutOfRange { field: "to", value: 1 << 24, max: (1 << 24) - 1 },
    );
    // A token nobody holds is simply a zero balance.
    rejects(
        &mut ex,
        transfer(1, 2, 9, 5, 1, 0),
        TxError::InsufficientBalance { account: 1, token: 9, needed: 5, available: 0 },
    );
    // Replay: the same transaction twice.
    let tx = transfer(1, 2, 1, 5, 1, 0);
    ex.apply(&tx).expect("first");
    rejects(&mut ex, tx, TxError::BadNonce { account: 1, expected: 1, got: 0 });
}

#[test]
fn overflow_is_rejected() {
    let mut g = Genesis::devnet(3);
    g.accounts[1].balances = vec![(0, 100), (1, 10)];
    g.accounts[2].balances = vec![(1, u64::MAX - 20)];
    g.pools.clear();
    let state = g.build_unvalidated();
    let mut ex = Executor::new(state, 4);
    rejects(
        &mut ex,
        transfer(1, 2, 1, 21, 0, 0),
        TxError::InsufficientBalance { account: 1, token: 1, needed: 21, available: 10 },
    );
    ex.apply(&transfer(1, 2, 1, 5, 0, 0)).expect("fits");
    let mut g2 = g.clone();
    g2.accounts[1].balances = vec![(0, 100), (1, 30)];
    let mut ex = Executor::new(g2.build_unvalidated(), 4);
    rejects(&mut ex, transfer(1, 2, 1, 21, 0, 0), TxError::Overflow { what: "receiver balance" });
    // Genesis refuses a supply above u64::MAX, which is what makes overflow unreachable.
    assert!(g2.validate().is_err());
}

#[test]
fn register_creates_an_empty_account_once() {
    let mut ex = executor();
    let pubkey = devnet_pubkey(50);
    let reg = Tx::Register(Register { account: 50, pubkey, pop: [0; 64] });
    ex.apply(&reg).expect("free id");
    let rec = ex.state().account(50).expect("created");
    assert_eq!((rec.nonce, rec.fee_balance), (0, 0));
    assert_eq!(rec.pubkey_hash, circuits::hash::pubkey_hash(&pubkey));
    // The trees are hashed at the seal: then the new leaf holds an empty balance tree.
    let w = ex.seal_batch().expect("seal");
    assert_eq!(w.new_root, ex.state().root());
    assert_eq!(ex.state().balance_root(50), circuits::hash::empty_balance_root());
    let leaf = circuits::hash::account_leaf(rec.pubkey_hash, 0, 0, circuits::hash::empty_balance_root());
    assert_eq!(circuits::state::ACCOUNTS.leaf(&*ex.state().store().nodes(), 50), leaf, "the stored leaf");
    rejects(&mut ex, reg, TxError::AccountExists { account: 50 });
    rejects(
        &mut ex,
        Tx::Register(Register { account: 1, pubkey, pop: [0; 64] }),
        TxError::AccountExists { account: 1 },
    );
    rejects(
        &mut ex,
        Tx::Register(Register { account: 1 << 24, pubkey, pop: [0; 64] }),
        TxError::OutOfRange { field: "account", value: 1 << 24, max: (1 << 24) - 1 },
    );
    // The new account can receive and then spend.
    ex.apply(&transfer(1, 50, 0, 100, 0, 0)).expect("fund");
    ex.apply(&transfer(50, 2, 0, 60, 10, 0)).expect("spend");
    assert_eq!(ex.state().balance(50, 0), 30);
}

#[test]
fn swap_follows_get_amount_out_and_moves_reserves() {
    let mut ex = executor();
    let expected = amount_out(1_000_000, DEVNET_RESERVE, DEVNET_RESERVE, 30).expect("defined");
    let r = ex.apply(&swap(4, 3, Direction::AToB, 1_000_000, expected, 0)).expect("valid");
    assert_eq!(r.swap_out, Some(expected));
    let s = ex.state();
    // Pool 3 trades token 1 for token 2.
    assert_eq!(s.balance(4, 1), DEVNET_BALANCE - 1_000_000);
    assert_eq!(s.balance(4, 2), DEVNET_BALANCE + expected);
    assert_eq!(s.balance(4, FEE_TOKEN), DEVNET_BALANCE - 1);
    let p = s.pool(3).expect("pool");
    assert_eq!((p.reserve_a, p.reserve_b), (DEVNET_RESERVE + 1_000_000, DEVNET_RESERVE - expected));
    // And back the other way.
    let back = amount_out(expected, p.reserve_b, p.reserve_a, 30).expect("defined");
    ex.apply(&swap(4, 3, Direction::BToA, expected, 0, 1)).expect("valid");
    assert_eq!(ex.state().balance(4, 1), DEVNET_BALANCE - 1_000_000 + back);
    assert!(back < 1_000_000, "a round trip through a fee pool loses value");
}

#[test]
fn swap_with_the_fee_token_on_either_side() {
    let mut ex = executor();
    // Pool 0 is (token 0, token 1): pay in the fee token, then receive it.
    ex.apply(&swap(5, 0, Direction::AToB, 1_000, 0, 0)).expect("pay fee token");
    ex.apply(&swap(5, 0, Direction::BToA, 1_000, 0, 1)).expect("receive fee token");
}

#[test]
fn swap_errors() {
    let mut ex = executor();
    rejects(&mut ex, swap(4, 3, Direction::AToB, 0, 0, 0), TxError::ZeroAmount);
    rejects(&mut ex, swap(4, 77, Direction::AToB, 10, 0, 0), TxError::UnknownPool { pool: 77 });
    rejects(&mut ex, swap(99, 3, Direction::AToB, 10, 0, 0), TxError::UnknownAccount { account: 99 });
    rejects(&mut ex, swap(4, 3, Direction::AToB, 10_000, 0, 2), TxError::BadNonce { account: 4, expected: 0, got: 2 });
    rejects(&mut ex, swap(4, 3, Direction::AToB, 1, 0, 0), TxError::ZeroOutput);
    let out = amount_out(10_000, DEVNET_RESERVE, DEVNET_RESERVE, 30).expect("defined");
    rejects(&mut ex, swap(4, 3, Direction::AToB, 10_000, out + 1, 0), TxError::Slippage { out, min_out: out + 1 });
    rejects(
        &mut ex,
        swap(4, 3, Direction::AToB, DEVNET_BALANCE + 1, 0, 0),
        TxError::InsufficientBalance { account: 4, token: 1, needed: DEVNET_BALANCE + 1, available: DEVNET_BALANCE },
    );
    rejects(
        &mut ex,
        swap(4, 1 << 24, Direction::AToB, 10, 0, 0),
        TxError::OutOfRange { field: "pool", value: 1 << 24, max: (1 << 24) - 1 },
    );
}

#[test]
fn batches_fill_and_seal() {
    let mut ex = Executor::new(Genesis::devnet(4).build().expect("genesis"), 2);
    ex.apply(&transfer(1, 2, 1, 1, 1, 0)).expect("1");
    ex.apply(&transfer(1, 2, 1, 1, 1, 1)).expect("2");
    rejects(&mut ex, transfer(1, 2, 1, 1, 1, 2), TxError::BatchFull { capacity: 2 });
    let a = ex.seal_batch().expect("seal");
    ex.apply(&transfer(1, 2, 1, 1, 1, 2)).expect("next batch");
    let b = ex.seal_batch().expect("seal");
    assert_eq!(a.new_root, b.old_root);
    assert_eq!(a.commitment_out, b.commitment_in, "the commitment chain continues across batches");
    let empty = ex.seal_batch().expect("an empty batch seals too");
    assert_eq!(empty.old_root, empty.new_root);
}

#[test]
fn genesis_is_deterministic_and_validated() {
    assert_eq!(Genesis::devnet(8).build().expect("a").root(), Genesis::devnet(8).build().expect("b").root());
    let mut g = Genesis::devnet(2);
    g.pools[0].fee_bps = 10_000;
    assert!(g.validate().is_err());
    let mut g = Genesis::devnet(2);
    g.accounts.remove(0);
    assert!(g.validate().is_err(), "the operator account is required");
}

/// Sealing behind (the hashing and the commitment chain on the executor's thread while the next
/// batch applies) gives the witnesses and the state that sealing in place gives, in seal order,
/// however far the taking lags: up to the bound of seals in flight, past which a seal waits; the
/// chain restarts where a block starts; and a seal in place after seals behind waits for them,
/// goes on with their chain, and leaves their witnesses to be taken.
#[test]
fn sealing_behind_gives_what_sealing_in_place_gives() {
    let genesis = Genesis::devnet(64);
    let load = circuits::load::mixed_load(16 * 10 + 5, 64, 0.3);
    let mut reference = Executor::new(genesis.build().expect("genesis"), 16);
    let mut want = Vec::new();
    // A block starts (the commitment chain restarts) before batch 5.
    let restarts = |i: usize| i == 5;
    for (i, chunk) in load.chunks(16).enumerate() {
        if restarts(i) {
            reference.restart_commitment();
        }
        for tx in chunk {
            reference.apply(tx).expect("valid");
        }
        want.push(reference.seal_batch().expect("seal"));
    }

    let mut ex = Executor::new(genesis.build().expect("genesis"), 16);
    let mut got = Vec::new();
    for (i, chunk) in load.chunks(16).enumerate() {
        if restarts(i) {
            ex.restart_commitment();
        }
        for tx in chunk {
            ex.apply(tx).expect("valid");
        }
        match i {
            // Batch 9 sealed in place, behind the others still hashing; batch 10 (partial)
            // behind again, its chain going on from batch 9's.
            9 => {
                assert!(ex.untaken_seals() > 0, "seals left untaken before it");
                let w = ex.seal_batch().expect("seal");
                while let Some(earlier) = ex.take_hashed() {
                    got.push(earlier);
                }
                got.push(w);
            }
            _ => ex.seal_batch_behind().expect("seal"),
        }
        // Taken now and then, so that up to four seals wait: two hashing, two received. The
        // second time, first those whose hashing is done (given time to be: both those received
        // and those still in the thread's channel), then the rest.
        if i % 4 == 3 {
            if i == 7 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                while let Some(w) = ex.take_hashed() {
                    got.push(w);
                }
            }
            while let Some(w) = ex.wait_hashed() {
                got.push(w);
            }
            assert_eq!(ex.state().root(), want[i].new_root, "every seal hashed: the trees are batch {i}'s");
        }
    }
    while let Some(w) = ex.wait_hashed() {
        got.push(w);
    }
    assert_eq!(ex.untaken_seals(), 0);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "batch {i}: the witness sealed behind differs");
    }
    assert_eq!(ex.state().root(), reference.state().root());
    assert!(*ex.state() == *reference.state(), "the same values and nodes");
}

/// Each seal's leaf writes, written over the genesis, rebuild the executor's state at a seal:
/// every value and every tree node, whether the batches sealed in place or behind, fees and a
/// balance back to zero (an empty leaf the genesis had filled) included. And nothing is kept
/// unless asked for.
#[test]
fn kept_leaf_writes_rebuild_the_state_over_the_genesis() {
    let genesis = Genesis::devnet(16);
    let mut ex = Executor::new(genesis.build().expect("genesis"), 16);
    ex.keep_leaf_writes();
    let mut writes = Vec::new();
    let mut at_seal = Vec::new();
    for (i, chunk) in circuits::load::mixed_load(15 * 6, 16, 0.3).chunks(15).enumerate() {
        for tx in chunk {
            ex.apply(tx).expect("valid");
        }
        if i == 5 {
            // Account 5 sends all of its token 3 (the load's last batch, so that its nonces
            // stay right): its leaf is empty again.
            let (nonce, all) = (ex.state().account(5).expect("account").nonce, ex.state().balance(5, 3));
            ex.apply(&transfer(5, 6, 3, all, 0, nonce)).expect("valid");
        }
        if i % 2 == 0 {
            ex.seal_batch().expect("seal");
        } else {
            ex.seal_batch_behind().expect("seal");
        }
        writes.push(ex.take_leaf_writes().expect("the seal's writes"));
        assert!(ex.take_leaf_writes().is_none(), "one batch's writes a seal");
        while ex.wait_hashed().is_some() {}
        at_seal.push(ex.state().clone());
    }
    assert_eq!(ex.state().balance(5, 3), 0);
    assert!(writes[5].contains(&deferred::Update::Balance { account: 5, token: 3, amount: 0 }));

    // The whole history at once, and the first three batches then the rest.
    let mut rebuilt = genesis.build().expect("genesis");
    rebuilt.write_leaves(writes.iter().flatten().copied());
    assert!(rebuilt == at_seal[5], "the same values and nodes as the executor's");
    let mut rebuilt = genesis.build().expect("genesis");
    rebuilt.write_leaves(writes[..3].iter().flatten().copied());
    assert!(rebuilt == at_seal[2], "batch 2's state");
    rebuilt.write_leaves(writes[3..].iter().flatten().copied());
    assert_eq!(rebuilt.root(), ex.state().root());

    let mut plain = executor();
    plain.apply(&transfer(1, 2, 0, 5, 1, 0)).expect("valid");
    plain.seal_batch().expect("seal");
    assert_eq!(plain.take_leaf_writes(), None);
}

mod sequences {
    //! Many random sequences, no proofs: each transaction's acceptance and effects against a
    //! model of the rules written apart from the executor, on a genesis at the edge of
    //! overflow.

    use std::collections::BTreeMap;

    use circuits::hash::pubkey_hash;
    use circuits::state::FEE_TOKEN;
    use circuits::swap::amount_out;
    use circuits::*;
    use proptest::prelude::*;

    use super::common::{op, supply, to_tx, ACCOUNTS, POOLS, TOKENS};

    const CAPACITY: usize = 4;

    /// The devnet of 8 accounts, account 1 holding the rest of every funded token's supply up
    /// to `u64::MAX`: every sum the executor checks can reach its edge, and genesis's rule
    /// (supply at most `u64::MAX`) still holds, so no overflow is reachable.
    fn full_supply() -> Genesis {
        let mut g = Genesis::devnet(8);
        let devnet = supply(&g.build().expect("the devnet"), 0);
        for (token, balance) in &mut g.accounts[1].balances {
            let others = devnet[usize::from(*token)] - u128::from(*balance);
            *balance = u64::try_from(u128::from(u64::MAX) - others).expect("the devnet's supply is below u64::MAX");
        }
        g.validate().expect("a supply of exactly u64::MAX is valid");
        g
    }

    /// Balance changes: `(account, token) -> signed change`.
    type Changes = BTreeMap<(u32, u16), i128>;

    /// Whether the rules accept `tx` in `state`, and if they do the balance changes it makes and
    /// a swap's output.
    fn model(state: &State, tx: &Tx) -> Option<(Changes, Option<u64>)> {
        let sender_ok = |a: u32, nonce: u32| state.account(a).is_some_and(|r| r.nonce == nonce && r.nonce < u32::MAX);
        let mut d = BTreeMap::new();
        let mut add = |a: u32, t: u16, x: i128| *d.entry((a, t)).or_insert(0) += x;
        match *tx {
            Tx::Register(Register { account, .. }) => state.account(account).is_none().then_some((d, None)),
            Tx::Transfer(Transfer { from, to, token, amount, fee, nonce }) => {
                let funded = state.balance(from, token) >= amount
                    && state.balance(from, FEE_TOKEN) - if token == FEE_TOKEN { amount } else { 0 } >= fee;
                if amount == 0 || !sender_ok(from, nonce) || state.account(to).is_none() || !funded {
                    return None;
                }
                add(from, token, -i128::from(amount));
                add(from, FEE_TOKEN, -i128::from(fee));
                add(to, token, i128::from(amount));
                Some((d, None))
            }
            Tx::Swap(Swap { account, pool, direction, amount_in, min_out, fee, nonce }) => {
                let p = state.pool(pool)?;
                let (t_in, t_out, r_in, r_out) = match direction {
                    Direction::AToB => (p.token_a, p.token_b, p.reserve_a, p.reserve_b),
                    Direction::BToA => (p.token_b, p.token_a, p.reserve_b, p.reserve_a),
                };
                let funded = state.balance(account, t_in) >= amount_in
                    && state.balance(account, FEE_TOKEN) - if t_in == FEE_TOKEN { amount_in } else { 0 } >= fee;
                // The formula itself is held to a 256-bit reference in `swap_math.rs`.
                let out = amount_out(amount_in, r_in, r_out, p.fee_bps).unwrap_or(0);
                if amount_in == 0 || !sender_ok(account, nonce) || !funded || out == 0 || out < min_out {
                    return None;
                }
                add(account, t_in, -i128::from(amount_in));
                add(account, FEE_TOKEN, -i128::from(fee));
                add(account, t_out, i128::from(out));
                Some((d, Some(out)))
            }
        }
    }

    /// What a transaction may change: its parties' records and balances, and its pool.
    fn parties(tx: &Tx) -> (Vec<u32>, Option<u32>) {
        match *tx {
            Tx::Register(Register { account, .. }) => (vec![account], None),
            Tx::Transfer(Transfer { from, to, .. }) => (vec![from, to], None),
            Tx::Swap(Swap { account, pool, .. }) => (vec![account], Some(pool)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn random_sequences_follow_the_rules(ops in prop::collection::vec(op(), 1..40)) {
            let mut ex = Executor::new(full_supply().build().expect("genesis"), CAPACITY);
            let total = supply(ex.state(), 0);
            for op in &ops {
                let tx = to_tx(&ex, op);
                if ex.open_len() == CAPACITY {
                    prop_assert_eq!(ex.apply(&tx), Err(TxError::BatchFull { capacity: CAPACITY }));
                    let w = ex.seal_batch().expect("seal");
                    prop_assert_eq!(w.new_root, ex.state().root());
                    prop_assert_eq!(ex.pending_fees(), 0);
                    prop_assert_eq!(supply(ex.state(), 0), total.clone(), "the seal credits the fees");
                }
                let before = ex.state().clone();
                let (open, fees) = (ex.open_len(), ex.pending_fees());
                let expected = model(&before, &tx);
                match ex.apply(&tx) {
                    Err(e) => {
                        prop_assert!(expected.is_none(), "{:?} refused ({}), the rules accept it", tx, e);
                        prop_assert!(!matches!(e, TxError::Overflow { .. }), "{:?}: {} past genesis's rule", tx, e);
                        prop_assert!(*ex.state() == before, "refused {:?} changed the state", tx);
                        prop_assert_eq!((ex.open_len(), ex.pending_fees()), (open, fees));
                    }
                    Ok(receipt) => {
                        let (changes, out) = expected.ok_or_else(|| TestCaseError::fail(format!("{tx:?} accepted, the rules refuse it")))?;
                        prop_assert_eq!(receipt.slot, open);
                        prop_assert_eq!(receipt.swap_out, out);
                        prop_assert_eq!(ex.open_len(), open + 1);
                        let fee = match &tx { Tx::Transfer(t) => t.fee, Tx::Swap(s) => s.fee, Tx::Register(_) => 0 };
                        prop_assert_eq!(ex.pending_fees(), fees + fee);
                        let (accounts, pool) = parties(&tx);
                        for a in 0..ACCOUNTS {
                            let (old, new) = (before.account(a), ex.state().account(a));
                            if !accounts.contains(&a) {
                                prop_assert_eq!(new, old, "account {} is not {:?}'s", a, tx);
                            } else if let Tx::Register(r) = &tx {
                                prop_assert_eq!(new, Some(AccountRecord::registered(pubkey_hash(&r.pubkey))));
                            } else {
                                // Its key stays, and its nonce moves by one if it is the sender.
                                let sent = u32::from(a == tx.sender());
                                prop_assert_eq!(new.map(|r| (r.pubkey_hash, r.nonce)), old.map(|r| (r.pubkey_hash, r.nonce + sent)));
                            }
                            for t in 0..TOKENS {
                                let change = changes.get(&(a, t)).copied().unwrap_or(0);
                                let want = i128::from(before.balance(a, t)) + change;
                                prop_assert_eq!(i128::from(ex.state().balance(a, t)), want, "account {} token {} after {:?}", a, t, tx);
                            }
                        }
                        for p in 0..POOLS {
                            let (old, new) = (before.pool(p), ex.state().pool(p));
                            match (pool == Some(p), &tx, out) {
                                (true, Tx::Swap(s), Some(out)) => {
                                    let (old, new) = (old.expect("the swap's pool"), new.expect("a pool stays"));
                                    let reserves = match s.direction {
                                        Direction::AToB => (old.reserve_a + s.amount_in, old.reserve_b - out),
                                        Direction::BToA => (old.reserve_a - out, old.reserve_b + s.amount_in),
                                    };
                                    prop_assert_eq!((new.reserve_a, new.reserve_b), reserves);
                                    prop_assert_eq!((new.token_a, new.token_b, new.fee_bps), (old.token_a, old.token_b, old.fee_bps));
                                }
                                _ => prop_assert_eq!(new, old, "pool {} is not {:?}'s", p, tx),
                            }
                        }
                    }
                }
                prop_assert_eq!(supply(ex.state(), ex.pending_fees()), total.clone());
            }
            let w = ex.seal_batch().expect("seal");
            prop_assert_eq!(w.new_root, ex.state().root());
            prop_assert_eq!(supply(ex.state(), 0), total);
        }
    }
}
