//! What the batch circuit needs to prove a batch: every leaf it opens and every path, captured by
//! the executor as it applies the transactions.

use crate::hash::{Digest, ACCOUNT_DEPTH, TOKEN_DEPTH, ZERO_DIGEST};
use crate::smt::MerklePath;
use crate::state::{AccountRecord, Pool};
use crate::tx::Tx;

/// One of a slot's two balance-tree updates (the debit of the paid token, the credit of the
/// received one); disabled where that token is the fee token, whose balance is the account
/// leaf's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceStep {
    /// Whether the slot performs this update.
    pub enabled: bool,
    /// The leaf's balance before the update.
    pub old: u64,
    /// Siblings of the leaf in its balance tree.
    pub path: MerklePath,
}

impl BalanceStep {
    /// An update the slot does not perform.
    pub fn disabled() -> Self {
        Self { enabled: false, old: 0, path: vec![ZERO_DIGEST; TOKEN_DEPTH] }
    }
}

/// Everything one slot of the batch circuit opens. For a transfer: the sender (`a`) and the
/// receiver (`b`); for a swap: the trader (`a`) and the pool; for a register: the new account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWitness {
    /// The transaction, `None` for a padding no-op.
    pub tx: Option<Tx>,
    /// The sender's record before the slot, its fee-token balance included (zero for a
    /// register).
    pub a_record: AccountRecord,
    /// The sender's balance root before the slot.
    pub a_balance_root: Digest,
    /// The sender's account-tree path.
    pub a_path: MerklePath,
    /// Debit of the paid token, credit of the received token, in balance trees. The fee's debit
    /// is the sender's record's.
    pub steps: [BalanceStep; 2],
    /// The receiver's record, read after the sender's update (transfers).
    pub b_record: AccountRecord,
    /// The receiver's balance root, read after the sender's update (transfers).
    pub b_balance_root: Digest,
    /// The pool before the swap (swaps).
    pub pool: Pool,
    /// Path of the second update: the receiver in the account tree, or the pool in the pool tree.
    pub b_path: MerklePath,
    /// The swap's output (swaps).
    pub out: u64,
}

/// An all-zero pool: what a slot that opens no pool carries in its pool fields.
pub const NO_POOL: Pool = Pool { token_a: 0, token_b: 0, reserve_a: 0, reserve_b: 0, fee_bps: 0 };
/// An all-zero account record.
pub const NO_ACCOUNT: AccountRecord = AccountRecord { pubkey_hash: ZERO_DIGEST, nonce: 0, fee_balance: 0 };

impl SlotWitness {
    /// A padding no-op.
    pub fn noop() -> Self {
        Self {
            tx: None,
            a_record: NO_ACCOUNT,
            a_balance_root: ZERO_DIGEST,
            a_path: vec![ZERO_DIGEST; ACCOUNT_DEPTH],
            steps: [BalanceStep::disabled(), BalanceStep::disabled()],
            b_record: NO_ACCOUNT,
            b_balance_root: ZERO_DIGEST,
            pool: NO_POOL,
            b_path: vec![ZERO_DIGEST; ACCOUNT_DEPTH],
            out: 0,
        }
    }
}

/// The end-of-batch credit of all the batch's fees to the operator's fee-token balance, in its
/// account leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorWitness {
    /// The operator's record before the credit.
    pub record: AccountRecord,
    /// The operator's balance root.
    pub balance_root: Digest,
    /// Path of the operator's account leaf.
    pub account_path: MerklePath,
    /// Sum of the batch's fees.
    pub fee_total: u64,
}

/// An executed batch: its transactions in order, with everything the circuit opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchWitness {
    /// One witness per executed transaction (no padding; the circuit pads).
    pub slots: Vec<SlotWitness>,
    /// The fee credit.
    pub operator: OperatorWitness,
    /// Account root before the batch.
    pub old_account_root: Digest,
    /// Pool root before the batch.
    pub old_pool_root: Digest,
    /// State root before the batch.
    pub old_root: Digest,
    /// State root after the batch.
    pub new_root: Digest,
    /// Transaction-commitment chain value before the batch.
    pub commitment_in: Digest,
    /// Chain value after the batch.
    pub commitment_out: Digest,
}
