//! The native executor: the state transition function the circuit proves.
//!
//! Transactions apply one at a time into the open batch; a rejected transaction changes nothing.
//! Fees are collected into the batch and credited to the operator's fee-token balance when the
//! batch is sealed, exactly as the circuit's final step does.
//!
//! A transaction's checks and its leaf values are done as it applies; the Merkle hashing of its
//! updates, and its step of the transaction-commitment chain, wait for the seal, where the whole batch's is done level by level
//! ([`crate::deferred`]), in place ([`Executor::seal_batch`]) or on the executor's hashing
//! thread while the next batch applies ([`Executor::seal_batch_behind`]). So between seals the
//! state's values are current and its roots and paths are the last sealed batch's.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, PoisonError};

use crate::deferred::{Hashed, Journal, Update};
use crate::error::TxError;
use crate::hash::{hash_pair, pubkey_hash, Digest, ACCOUNT_DEPTH, POOL_DEPTH, TOKEN_DEPTH, ZERO_DIGEST};
use crate::state::{AccountRecord, Pool, State, ACCOUNTS, FEE_TOKEN, OPERATOR_ACCOUNT, POOLS};
use crate::store::{MemoryStore, NodeStore, SharedNodes, StateStore};
use crate::swap::amount_out;
use crate::tx::{commit_step, Direction, Register, Swap, Transfer, Tx};
use crate::witness::{BalanceStep, BatchWitness, OperatorWitness, SlotWitness, NO_ACCOUNT, NO_POOL};

/// What an accepted transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Its slot in the open batch.
    pub slot: usize,
    /// The output of a swap.
    pub swap_out: Option<u64>,
}

/// Applies transactions to a state and records batch witnesses.
#[derive(Debug)]
pub struct Executor<S: StateStore = MemoryStore> {
    state: State<S>,
    capacity: usize,
    slots: Vec<SlotWitness>,
    /// Where each open slot's paths and balance roots come from in the journal's hashing.
    refs: Vec<SlotRefs>,
    journal: Journal,
    pending_fees: u64,
    /// Where the next sealed batch's commitment chain starts: known (zero at a block's start, or
    /// where a batch sealed in place ended), or `None` to go on from the last batch sealed
    /// behind, which the hashing thread knows ([`Sealing::hash`] runs the chain).
    chain_next: Option<Digest>,
    /// The chain's end at the last witness received from the hashing thread.
    last_received_out: Option<Digest>,
    /// The hashing thread of [`Executor::seal_batch_behind`], once started.
    behind: Option<Behind>,
    /// Witnesses hashed and received, not yet taken.
    hashed: VecDeque<BatchWitness>,
    /// Each sealed batch's leaf updates, not yet taken, when kept
    /// ([`Executor::keep_leaf_writes`]).
    leaf_writes: Option<VecDeque<Vec<Update>>>,
}

/// A slot's entries in the journal: its updates' paths and its balance-root reads, filled into
/// its witness when the batch is sealed.
#[derive(Clone, Copy, Debug, Default)]
struct SlotRefs {
    a_balance_root: Option<usize>,
    a_path: Option<usize>,
    steps: [Option<usize>; 2],
    b_balance_root: Option<usize>,
    b_path: Option<usize>,
}

fn check_bits(field: &'static str, value: u32, bits: usize) -> Result<(), TxError> {
    let max = (1u64 << bits) - 1;
    if u64::from(value) > max {
        return Err(TxError::OutOfRange { field, value: value.into(), max });
    }
    Ok(())
}

impl<S: StateStore> Executor<S> {
    /// An executor with batches of `capacity` transactions; the commitment chain starts at zero.
    pub fn new(state: State<S>, capacity: usize) -> Self {
        Self {
            state,
            capacity,
            slots: Vec::new(),
            refs: Vec::new(),
            journal: Journal::default(),
            pending_fees: 0,
            chain_next: Some(ZERO_DIGEST),
            last_received_out: None,
            behind: None,
            hashed: VecDeque::new(),
            leaf_writes: None,
        }
    }

    /// From now on, each seal keeps what its batch wrote to the state's leaves (its updates in
    /// order, fees included: a later write of a leaf wins) for [`Executor::take_leaf_writes`]:
    /// how a sequencer saves the state a block settles at without saving all of it
    /// (`docs/services.md`). A copy of the journal, not a merge, so the seal, under the
    /// sequencer's lock, pays for a copy only.
    pub fn keep_leaf_writes(&mut self) {
        self.leaf_writes.get_or_insert_with(VecDeque::new);
    }

    /// The leaf writes of the oldest sealed batch whose writes were not taken yet, in seal order;
    /// `None` when none is left or they are not kept. They are known at the seal, before its
    /// hashing behind is done.
    pub fn take_leaf_writes(&mut self) -> Option<Vec<Update>> {
        self.leaf_writes.as_mut()?.pop_front()
    }

    /// The state: its accounts, balances and pools include the open batch's transactions (but
    /// not its pending fees); its trees, so its roots and paths, are as of the last sealed batch
    /// (their hashing waits for the seal).
    pub fn state(&self) -> &State<S> {
        &self.state
    }

    /// Transactions in the open batch.
    pub fn open_len(&self) -> usize {
        self.slots.len()
    }

    /// The batch capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fees collected by the open batch.
    pub fn pending_fees(&self) -> u64 {
        self.pending_fees
    }

    /// Restarts the transaction-commitment chain (at a block boundary). Only between batches.
    pub fn restart_commitment(&mut self) {
        debug_assert!(self.slots.is_empty());
        self.chain_next = Some(ZERO_DIGEST);
    }

    fn record(&self, account: u32) -> Result<AccountRecord, TxError> {
        self.state.account(account).ok_or(TxError::UnknownAccount { account })
    }

    fn debit_check(&self, account: u32, token: u16, have: u64, need: u64) -> Result<u64, TxError> {
        have.checked_sub(need).ok_or(TxError::InsufficientBalance { account, token, needed: need, available: have })
    }

    /// Applies one transaction into the open batch, or rejects it with nothing changed.
    pub fn apply(&mut self, tx: &Tx) -> Result<Receipt, TxError> {
        if self.slots.len() >= self.capacity {
            return Err(TxError::BatchFull { capacity: self.capacity });
        }
        let ((slot, refs), swap_out) = match tx {
            Tx::Register(r) => (self.register(r)?, None),
            Tx::Transfer(t) => (self.transfer(t)?, None),
            Tx::Swap(s) => {
                let (w, out) = self.swap(s)?;
                (w, Some(out))
            }
        };
        self.slots.push(SlotWitness { tx: Some(tx.clone()), ..slot });
        self.refs.push(refs);
        Ok(Receipt { slot: self.slots.len() - 1, swap_out })
    }

    /// Checks the sender and its nonce; returns its record.
    fn sender(&self, account: u32, nonce: u32) -> Result<AccountRecord, TxError> {
        check_bits("account", account, ACCOUNT_DEPTH)?;
        let rec = self.record(account)?;
        if nonce != rec.nonce {
            return Err(TxError::BadNonce { account, expected: rec.nonce, got: nonce });
        }
        if rec.nonce == u32::MAX {
            return Err(TxError::NonceExhausted { account });
        }
        Ok(rec)
    }

    fn check_fee(&self, fee: u64) -> Result<(), TxError> {
        let op = self.state.balance(OPERATOR_ACCOUNT, FEE_TOKEN);
        self.pending_fees
            .checked_add(fee)
            .and_then(|p| p.checked_add(op))
            .map(|_| ())
            .ok_or(TxError::Overflow { what: "operator fee balance" })
    }

    fn register(&mut self, r: &Register) -> Result<(SlotWitness, SlotRefs), TxError> {
        check_bits("account", r.account, ACCOUNT_DEPTH)?;
        if self.state.account(r.account).is_some() {
            return Err(TxError::AccountExists { account: r.account });
        }
        Ok(self.register_effects(r))
    }

    fn register_effects(&mut self, r: &Register) -> (SlotWitness, SlotRefs) {
        let record = AccountRecord::registered(pubkey_hash(&r.pubkey));
        let a_path = self.update(Update::Account { id: r.account, record });
        (
            SlotWitness { a_path: Vec::new(), ..SlotWitness::noop() },
            SlotRefs { a_path: Some(a_path), ..SlotRefs::default() },
        )
    }

    /// Writes an update's leaf value and journals its hashing; returns its place in the journal.
    fn update(&mut self, u: Update) -> usize {
        self.journal.push(self.state.store_mut(), u)
    }

    /// Journals a read of `account`'s balance root as it stands now.
    fn read_balance_root(&mut self, account: u32) -> usize {
        self.journal.read_balance_root(account)
    }

    fn transfer(&mut self, t: &Transfer) -> Result<(SlotWitness, SlotRefs), TxError> {
        if t.amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        check_bits("to", t.to, ACCOUNT_DEPTH)?;
        if u32::from(t.token) >= 1 << TOKEN_DEPTH {
            return Err(TxError::OutOfRange { field: "token", value: t.token.into(), max: (1 << TOKEN_DEPTH) - 1 });
        }
        let a = self.sender(t.from, t.nonce)?;
        self.record(t.to)?;
        // Dry run of the three balance updates in the circuit's order.
        let have = self.state.balance(t.from, t.token);
        let after_amount = self.debit_check(t.from, t.token, have, t.amount)?;
        let fee_have = if t.token == FEE_TOKEN { after_amount } else { self.state.balance(t.from, FEE_TOKEN) };
        self.debit_check(t.from, FEE_TOKEN, fee_have, t.fee)?;
        let to_have = if t.to == t.from {
            if t.token == FEE_TOKEN {
                fee_have - t.fee
            } else {
                after_amount
            }
        } else {
            self.state.balance(t.to, t.token)
        };
        to_have.checked_add(t.amount).ok_or(TxError::Overflow { what: "receiver balance" })?;
        self.check_fee(t.fee)?;

        Ok(self.transfer_effects(t, a))
    }

    /// The state update of a transfer, recording the witness (its paths and balance roots are
    /// filled in at the seal). Assumes the checks passed; wraps where they would have failed
    /// (only [`Executor::apply_forged`] reaches that).
    fn transfer_effects(&mut self, t: &Transfer, a: AccountRecord) -> (SlotWitness, SlotRefs) {
        let a_balance_root = self.read_balance_root(t.from);
        let (s1, r1) = self.step(t.from, t.token, t.amount, true);
        let paid = self.step_fee_token(t.from, t.fee, true);
        let a_path = self
            .update(Update::Account { id: t.from, record: AccountRecord { nonce: a.nonce.wrapping_add(1), ..paid } });
        let b_record = self.state.account(t.to).unwrap_or(NO_ACCOUNT);
        let b_balance_root = self.read_balance_root(t.to);
        let (s2, r2) = self.step(t.to, t.token, t.amount, false);
        let b_new = self.state.account(t.to).unwrap_or(NO_ACCOUNT);
        let b_path = self.update(Update::Account { id: t.to, record: b_new });
        self.pending_fees = self.pending_fees.wrapping_add(t.fee);
        let w = SlotWitness {
            tx: None,
            a_record: a,
            a_balance_root: ZERO_DIGEST,
            a_path: Vec::new(),
            steps: [s1, s2],
            b_record,
            b_balance_root: ZERO_DIGEST,
            pool: NO_POOL,
            b_path: Vec::new(),
            out: 0,
        };
        let refs = SlotRefs {
            a_balance_root: Some(a_balance_root),
            a_path: Some(a_path),
            steps: [r1, r2],
            b_balance_root: Some(b_balance_root),
            b_path: Some(b_path),
        };
        (w, refs)
    }

    /// Debits or credits one balance, recording the step: a balance-tree update (its path filled
    /// in at the seal), or for the fee token a write of the account's record, whose leaf the
    /// slot's account update then hashes, and a disabled step.
    fn step(&mut self, account: u32, token: u16, amount: u64, debit: bool) -> (BalanceStep, Option<usize>) {
        if token == FEE_TOKEN {
            self.step_fee_token(account, amount, debit);
            return (BalanceStep::disabled(), None);
        }
        let old = self.state.balance(account, token);
        let new = if debit { old.wrapping_sub(amount) } else { old.wrapping_add(amount) };
        let path = self.update(Update::Balance { account, token, amount: new });
        (BalanceStep { enabled: true, old, path: Vec::new() }, Some(path))
    }

    /// Debits or credits an account's fee-token balance in its record (an unknown account's
    /// record is written: only [`Executor::apply_forged`] reaches one); returns the record.
    fn step_fee_token(&mut self, account: u32, amount: u64, debit: bool) -> AccountRecord {
        let mut r = self.state.account(account).unwrap_or(NO_ACCOUNT);
        r.fee_balance = if debit { r.fee_balance.wrapping_sub(amount) } else { r.fee_balance.wrapping_add(amount) };
        self.state.store_mut().put_account(account, r);
        r
    }

    fn swap(&mut self, s: &Swap) -> Result<((SlotWitness, SlotRefs), u64), TxError> {
        if s.amount_in == 0 {
            return Err(TxError::ZeroAmount);
        }
        check_bits("pool", s.pool, POOL_DEPTH)?;
        let a = self.sender(s.account, s.nonce)?;
        let pool = self.state.pool(s.pool).ok_or(TxError::UnknownPool { pool: s.pool })?;
        let (token_in, token_out, r_in, r_out) = match s.direction {
            Direction::AToB => (pool.token_a, pool.token_b, pool.reserve_a, pool.reserve_b),
            Direction::BToA => (pool.token_b, pool.token_a, pool.reserve_b, pool.reserve_a),
        };
        let have = self.state.balance(s.account, token_in);
        let after_in = self.debit_check(s.account, token_in, have, s.amount_in)?;
        let fee_have = if token_in == FEE_TOKEN { after_in } else { self.state.balance(s.account, FEE_TOKEN) };
        let after_fee = self.debit_check(s.account, FEE_TOKEN, fee_have, s.fee)?;
        let out = amount_out(s.amount_in, r_in, r_out, pool.fee_bps).ok_or(TxError::ZeroOutput)?;
        if out == 0 {
            return Err(TxError::ZeroOutput);
        }
        if out < s.min_out {
            return Err(TxError::Slippage { out, min_out: s.min_out });
        }
        r_in.checked_add(s.amount_in).ok_or(TxError::Overflow { what: "pool reserve" })?;
        let out_have = if token_out == FEE_TOKEN { after_fee } else { self.state.balance(s.account, token_out) };
        out_have.checked_add(out).ok_or(TxError::Overflow { what: "trader balance" })?;
        self.check_fee(s.fee)?;

        Ok((self.swap_effects(s, a, pool, out), out))
    }

    /// The state update of a swap paying `out`, recording the witness (see `transfer_effects`).
    fn swap_effects(&mut self, s: &Swap, a: AccountRecord, pool: Pool, out: u64) -> (SlotWitness, SlotRefs) {
        let (token_in, token_out) = match s.direction {
            Direction::AToB => (pool.token_a, pool.token_b),
            Direction::BToA => (pool.token_b, pool.token_a),
        };
        let a_balance_root = self.read_balance_root(s.account);
        let (s1, r1) = self.step(s.account, token_in, s.amount_in, true);
        self.step_fee_token(s.account, s.fee, true);
        let (s2, r2) = self.step(s.account, token_out, out, false);
        let now = self.state.account(s.account).unwrap_or(NO_ACCOUNT);
        let a_path = self
            .update(Update::Account { id: s.account, record: AccountRecord { nonce: a.nonce.wrapping_add(1), ..now } });
        let mut new_pool = pool;
        let (r_in, r_out) = match s.direction {
            Direction::AToB => (&mut new_pool.reserve_a, &mut new_pool.reserve_b),
            Direction::BToA => (&mut new_pool.reserve_b, &mut new_pool.reserve_a),
        };
        *r_in = r_in.wrapping_add(s.amount_in);
        *r_out = r_out.wrapping_sub(out);
        let b_path = self.update(Update::Pool { id: s.pool, pool: new_pool });
        self.pending_fees = self.pending_fees.wrapping_add(s.fee);
        let w = SlotWitness {
            tx: None,
            a_record: a,
            a_balance_root: ZERO_DIGEST,
            a_path: Vec::new(),
            steps: [s1, s2],
            b_record: NO_ACCOUNT,
            b_balance_root: ZERO_DIGEST,
            pool,
            b_path: Vec::new(),
            out,
        };
        let refs = SlotRefs {
            a_balance_root: Some(a_balance_root),
            a_path: Some(a_path),
            steps: [r1, r2],
            b_balance_root: None,
            b_path: Some(b_path),
        };
        (w, refs)
    }

    /// Applies a transaction without any of the rules, recording the witness a cheating prover
    /// would make for it. Only for tests showing that the circuit refuses what the executor
    /// rejects; it breaks the state.
    #[doc(hidden)]
    pub fn apply_forged(&mut self, tx: &Tx) {
        let (w, refs) = match tx {
            Tx::Register(r) => self.register_effects(r),
            Tx::Transfer(t) => {
                let a = self.state.account(t.from).unwrap_or(NO_ACCOUNT);
                self.transfer_effects(t, a)
            }
            Tx::Swap(s) => {
                let a = self.state.account(s.account).unwrap_or(NO_ACCOUNT);
                let pool = self.state.pool(s.pool).unwrap_or(NO_POOL);
                let (r_in, r_out) = match s.direction {
                    Direction::AToB => (pool.reserve_a, pool.reserve_b),
                    Direction::BToA => (pool.reserve_b, pool.reserve_a),
                };
                let out = amount_out(s.amount_in, r_in, r_out, pool.fee_bps).unwrap_or(0);
                self.swap_effects(s, a, pool, out)
            }
        };
        self.slots.push(SlotWitness { tx: Some(tx.clone()), ..w });
        self.refs.push(refs);
    }

    /// Closes the open batch: credits its fees to the operator, hashes the batch's updates into
    /// the state's trees and returns its witness. The commitment chain continues into the next
    /// batch. Seals still hashing behind ([`Executor::seal_batch_behind`]) finish first; their
    /// witnesses stay for [`Executor::take_hashed`].
    pub fn seal_batch(&mut self) -> Result<BatchWitness, TxError> {
        while let Some(w) = self.receive_hashed(true) {
            self.hashed.push_back(w);
        }
        let sealing = self.close_batch()?;
        // With every seal behind received, the chain goes on from the last of them if it
        // does not start afresh.
        let start = sealing.commitment_in.or(self.last_received_out).expect("a chain to go on from");
        let w = sealing.hash(&mut *self.state.store_mut().nodes_mut(), start);
        self.chain_next = Some(w.commitment_out);
        Ok(w)
    }

    /// Closes the open batch as [`Executor::seal_batch`] does, and leaves its hashing to a
    /// thread of the executor's, so that the next batch can apply meanwhile: applying touches
    /// only leaf values, and the hashing only tree nodes. The witness comes out of
    /// [`Executor::take_hashed`] or [`Executor::wait_hashed`], in seal order. While a seal
    /// hashes, reads of the trees ([`State::root`], paths) wait for it. With two seals already
    /// hashing this waits for the first, so hashing that falls behind slows the applies rather
    /// than piling up.
    pub fn seal_batch_behind(&mut self) -> Result<(), TxError> {
        let sealing = self.close_batch()?;
        if self.behind.is_none() {
            self.behind = Behind::start(self.state.store().shared_nodes());
        }
        let Some(behind) = self.behind.as_mut() else {
            // No thread to be had: hash here (nothing was ever sealed behind, so the chain's
            // start is known).
            let start = sealing.commitment_in.expect("no seal behind");
            let w = sealing.hash(&mut *self.state.store_mut().nodes_mut(), start);
            self.chain_next = Some(w.commitment_out);
            self.hashed.push_back(w);
            return Ok(());
        };
        if behind.in_flight >= MAX_BEHIND {
            let w = self.receive_hashed(true).expect("a seal is in flight");
            self.hashed.push_back(w);
        }
        let behind = self.behind.as_mut().expect("started above");
        behind.jobs.send(sealing).unwrap_or_else(|_| panic!("{HASHING_STOPPED}"));
        behind.in_flight += 1;
        Ok(())
    }

    /// The witness of the oldest sealed batch whose hashing is done and whose witness was not
    /// taken yet, without waiting.
    pub fn take_hashed(&mut self) -> Option<BatchWitness> {
        self.hashed.pop_front().or_else(|| self.receive_hashed(false))
    }

    /// The witness of the oldest sealed batch not taken yet, waiting for its hashing; `None`
    /// when every sealed batch's witness was taken.
    pub fn wait_hashed(&mut self) -> Option<BatchWitness> {
        self.hashed.pop_front().or_else(|| self.receive_hashed(true))
    }

    /// Sealed batches whose witness was not taken yet, hashing or done.
    pub fn untaken_seals(&self) -> usize {
        self.hashed.len() + self.behind.as_ref().map_or(0, |b| b.in_flight)
    }

    fn receive_hashed(&mut self, wait: bool) -> Option<BatchWitness> {
        let behind = self.behind.as_mut().filter(|b| b.in_flight > 0)?;
        let w = if wait {
            behind.results.recv().ok()
        } else {
            match behind.results.try_recv() {
                Ok(w) => Some(w),
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        };
        // The thread only stops early by panicking mid-batch, with the nodes half-written: a
        // bug, and this executor's state is gone with it (a sequencer restarts and replays).
        let w = w.unwrap_or_else(|| panic!("{HASHING_STOPPED}"));
        behind.in_flight -= 1;
        self.last_received_out = Some(w.commitment_out);
        Some(w)
    }

    /// Closes the open batch without hashing: credits its fees, journals the operator's
    /// updates, and moves everything the witness needs but the hashes into a [`Sealing`].
    fn close_batch(&mut self) -> Result<Sealing, TxError> {
        let record = self.record(OPERATOR_ACCOUNT)?;
        let credited = record
            .fee_balance
            .checked_add(self.pending_fees)
            .ok_or(TxError::Overflow { what: "operator fee balance" })?;
        let balance_root = self.read_balance_root(OPERATOR_ACCOUNT);
        let account_path = self.update(Update::Account {
            id: OPERATOR_ACCOUNT,
            record: AccountRecord { fee_balance: credited, ..record },
        });
        if let Some(kept) = &mut self.leaf_writes {
            kept.push_back(self.journal.updates().to_vec());
        }
        let sealing = Sealing {
            journal: std::mem::take(&mut self.journal),
            slots: std::mem::take(&mut self.slots),
            refs: std::mem::take(&mut self.refs),
            operator: OperatorWitness {
                record,
                balance_root: ZERO_DIGEST,
                account_path: Vec::new(),
                fee_total: self.pending_fees,
            },
            operator_refs: (balance_root, account_path),
            commitment_in: self.chain_next.take(),
        };
        self.pending_fees = 0;
        Ok(sealing)
    }
}

/// Seals hashing behind at most, before [`Executor::seal_batch_behind`] waits for the oldest.
const MAX_BEHIND: usize = 2;

const HASHING_STOPPED: &str = "the seal's hashing thread stopped: it panicked hashing a batch";

/// A closed batch waiting for its hashing: its witness but for the paths, the balance roots and
/// the trees' roots, which come from the nodes as the earlier seals left them.
#[derive(Debug)]
struct Sealing {
    journal: Journal,
    slots: Vec<SlotWitness>,
    refs: Vec<SlotRefs>,
    operator: OperatorWitness,
    /// The operator's balance-root read and account path in the journal.
    operator_refs: (usize, usize),
    /// Where the transaction-commitment chain starts, when the executor knows it; `None` where
    /// it goes on from the previous batch sealed behind (the hashing thread has its end).
    commitment_in: Option<Digest>,
}

impl Sealing {
    /// Hashes the batch into `nodes`, which must be as the previous seal left them, runs the
    /// transaction-commitment chain over its transactions from `commitment_in`, and returns
    /// its witness.
    fn hash<N: NodeStore + ?Sized>(mut self, nodes: &mut N, commitment_in: Digest) -> BatchWitness {
        // The chain is sequential, three permutations a transaction: here, off the applies.
        let commitment_out = self.slots.iter().filter_map(|s| s.tx.as_ref()).fold(commitment_in, commit_step);
        let (old_account_root, old_pool_root) = (ACCOUNTS.root(nodes), POOLS.root(nodes));
        let Hashed { mut paths, roots } = self.journal.hash_into(nodes);
        let mut path = |i: usize| std::mem::take(&mut paths[i]);
        for (slot, refs) in self.slots.iter_mut().zip(self.refs) {
            for (step, r) in slot.steps.iter_mut().zip(refs.steps) {
                if let Some(i) = r {
                    step.path = path(i);
                }
            }
            if let Some(i) = refs.a_path {
                slot.a_path = path(i);
            }
            if let Some(i) = refs.b_path {
                slot.b_path = path(i);
            }
            if let Some(i) = refs.a_balance_root {
                slot.a_balance_root = roots[i];
            }
            if let Some(i) = refs.b_balance_root {
                slot.b_balance_root = roots[i];
            }
        }
        let (balance_root, account_path) = self.operator_refs;
        BatchWitness {
            slots: self.slots,
            operator: OperatorWitness {
                balance_root: roots[balance_root],
                account_path: path(account_path),
                ..self.operator
            },
            old_account_root,
            old_pool_root,
            old_root: hash_pair(old_account_root, old_pool_root),
            new_root: hash_pair(ACCOUNTS.root(nodes), POOLS.root(nodes)),
            commitment_in,
            commitment_out,
        }
    }
}

/// The executor's hashing thread, and the seals sent to it and not yet received back.
#[derive(Debug)]
struct Behind {
    jobs: mpsc::Sender<Sealing>,
    results: mpsc::Receiver<BatchWitness>,
    in_flight: usize,
}

impl Behind {
    /// Starts the thread over `nodes`; `None` if the system gives no thread.
    fn start(nodes: &SharedNodes) -> Option<Self> {
        let nodes = Arc::clone(nodes);
        let (jobs, todo) = mpsc::channel::<Sealing>();
        let (done, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("seal-hashing".into())
            .spawn(move || {
                // In seal order: each batch's hashing starts from the nodes the previous left,
                // and its commitment chain where the previous ended unless it starts afresh.
                let mut chain = ZERO_DIGEST;
                for sealing in todo {
                    let start = sealing.commitment_in.unwrap_or(chain);
                    let w = sealing.hash(&mut *nodes.write().unwrap_or_else(PoisonError::into_inner), start);
                    chain = w.commitment_out;
                    if done.send(w).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self { jobs, results, in_flight: 0 })
    }
}
