//! The settled state in the sequencer's database: what a restart starts from instead of
//! replaying the transaction log from genesis (`docs/services.md`, "A restart starts from the
//! settled state").
//!
//! It is saved as changes over the genesis, in the write that records a block settled, once every
//! `--state-save-txs` settled transactions: each leaf the settled batches wrote, at its value
//! when the block ended (`l`), the keys of the accounts their `Register`s created (`r`; the state
//! holds only their hashes, and the sequencer checks signatures against the keys), and the
//! block's height, state root and settled transactions (`snapshot`). A restart writes the leaves
//! over the genesis, refuses a directory whose leaves do not hash to the root saved with them,
//! and replays the settled transactions after the save.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use circuits::bls::PublicKey;
use circuits::deferred::{LeafKey, Update};
use circuits::hash::{digest_to_bytes, Digest};
use circuits::state::FEE_TOKEN;
use circuits::{AccountRecord, Pool, State};
use rayon::prelude::*;

use crate::settlement::digest_from_bytes;

/// A settled leaf's value under the leaf. (Not `s`: a prefix byte must not begin a named
/// record, such as `settled` or `snapshot`.)
pub(super) const T_LEAF: u8 = b'l';
/// A registered account's public key under its id.
pub(super) const T_KEY: u8 = b'r';
/// The height and state root of the settled state the leaves make.
pub(super) const SNAPSHOT: &[u8] = b"snapshot";

/// Leaves written, the last value of each.
pub(super) type Leaves = BTreeMap<LeafKey, Update>;

/// Adds a batch's leaf writes to `leaves`, over those of the batches before it.
pub(super) fn merge(leaves: &mut Leaves, writes: &[Update]) {
    leaves.extend(writes.iter().map(|u| (u.leaf(), *u)));
}

/// The height and root of the saved state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Snapshot {
    /// The block the state is at the end of.
    pub height: u64,
    /// Its state root.
    pub root: Digest,
    /// The transactions settled up to that block: the log keeps those after them until the
    /// next save. None in a record of a version that saved the state with every settled block,
    /// where the saved block is the settled one.
    pub txs: Option<u64>,
}

impl Snapshot {
    pub fn to_bytes(self) -> Vec<u8> {
        let txs = self.txs.map(u64::to_be_bytes);
        [&self.height.to_be_bytes()[..], &digest_to_bytes(&self.root), txs.as_ref().map_or(&[][..], |t| &t[..])]
            .concat()
    }

    /// The saved state's record, if there is one.
    pub fn read(db: &sled::Db) -> Result<Option<Snapshot>> {
        let Some(v) = db.get(SNAPSHOT)? else { return Ok(None) };
        let corrupt = || anyhow::anyhow!("corrupt record of the settled state");
        let (height, rest) = v.split_at_checked(8).ok_or_else(corrupt)?;
        let (root, txs) = rest.split_at_checked(32).ok_or_else(corrupt)?;
        let txs = match txs.len() {
            0 => None,
            8 => Some(u64::from_be_bytes(txs.try_into().map_err(|_| corrupt())?)),
            _ => return Err(corrupt()),
        };
        Ok(Some(Snapshot {
            height: u64::from_be_bytes(height.try_into().map_err(|_| corrupt())?),
            root: digest_from_bytes(root).ok_or_else(corrupt)?,
            txs,
        }))
    }
}

/// A leaf's database entry: key and value.
pub(super) fn leaf_entry(u: &Update) -> (Vec<u8>, Vec<u8>) {
    match *u {
        Update::Balance { account, token, amount } => (
            [&[T_LEAF, b'b'][..], &account.to_be_bytes(), &token.to_be_bytes()].concat(),
            amount.to_be_bytes().to_vec(),
        ),
        Update::Account { id, record } => (
            [&[T_LEAF, b'a'][..], &id.to_be_bytes()].concat(),
            [&digest_to_bytes(&record.pubkey_hash)[..], &record.nonce.to_be_bytes(), &record.fee_balance.to_be_bytes()]
                .concat(),
        ),
        Update::Pool { id, pool } => (
            [&[T_LEAF, b'p'][..], &id.to_be_bytes()].concat(),
            [
                &pool.token_a.to_be_bytes()[..],
                &pool.token_b.to_be_bytes(),
                &pool.reserve_a.to_be_bytes(),
                &pool.reserve_b.to_be_bytes(),
                &pool.fee_bps.to_be_bytes(),
            ]
            .concat(),
        ),
    }
}

/// Reads fixed-size fields off a record, all of it.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N).context("record too short")?;
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u16(&mut self) -> Result<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn end(self) -> Result<()> {
        if !self.0.is_empty() {
            bail!("record too long");
        }
        Ok(())
    }
}

/// An account entry's length before the fee token's balance moved into the account leaf.
const ACCOUNT_VALUE_BEFORE_FEE_IN_LEAF: usize = 36;

/// A leaf saved by a version before the fee token's balance moved into the account leaf: its
/// state hashes to other roots, proven by another batch circuit, so it is another network's.
#[derive(Debug, thiserror::Error)]
#[error(
    "a leaf saved before the fee token's balance moved into the account leaf: this directory holds another \
     network's state (an earlier circuit's); start from a fresh directory"
)]
pub(super) struct EarlierLayout;

/// The leaf a database entry holds.
pub(super) fn decode_leaf(key: &[u8], value: &[u8]) -> Result<Update> {
    let (mut k, mut v) = (Fields(key), Fields(value));
    let [_, kind] = k.take::<2>()?;
    let u = match kind {
        b'b' => {
            let (account, token) = (k.u32()?, k.u16()?);
            if token == FEE_TOKEN {
                return Err(EarlierLayout.into());
            }
            Update::Balance { account, token, amount: v.u64()? }
        }
        b'a' => {
            if v.0.len() == ACCOUNT_VALUE_BEFORE_FEE_IN_LEAF {
                return Err(EarlierLayout.into());
            }
            let pubkey_hash = digest_from_bytes(&v.take::<32>()?).context("non-canonical digest")?;
            Update::Account {
                id: k.u32()?,
                record: AccountRecord { pubkey_hash, nonce: v.u32()?, fee_balance: v.u64()? },
            }
        }
        b'p' => Update::Pool {
            id: k.u32()?,
            pool: Pool {
                token_a: v.u16()?,
                token_b: v.u16()?,
                reserve_a: v.u64()?,
                reserve_b: v.u64()?,
                fee_bps: v.u16()?,
            },
        },
        other => bail!("unknown kind of leaf {other}"),
    };
    k.end()?;
    v.end()?;
    Ok(u)
}

/// A registered key's database entry.
pub(super) fn key_entry(account: u32, key: &PublicKey) -> ([u8; 5], Vec<u8>) {
    let mut k = [T_KEY; 5];
    k[1..].copy_from_slice(&account.to_be_bytes());
    (k, key.to_bytes().to_vec())
}

/// Writes the saved leaves over `state` (the genesis) and the saved keys into `registry`, and
/// checks that the state's root is `saved`'s.
pub(super) fn restore(
    db: &sled::Db,
    saved: Snapshot,
    state: &mut State,
    registry: &mut HashMap<u32, PublicKey>,
) -> Result<()> {
    let leaves = db
        .scan_prefix([T_LEAF])
        .map(|r| {
            let (k, v) = r?;
            decode_leaf(&k, &v).map_err(|e| {
                if e.is::<EarlierLayout>() {
                    e
                } else {
                    e.context(format!("corrupt leaf of the settled state {k:?}"))
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    state.write_leaves(leaves);
    if state.root() != saved.root {
        bail!(
            "the settled state in the database does not hash to block {}'s root {}: the directory is corrupt",
            saved.height,
            circuits::hash::digest_hex(&saved.root)
        );
    }
    // A key must be the one its account's leaf holds the hash of, so the root vouches for the
    // keys too: each is the key its registration checked, read back without the subgroup check
    // (`from_stored_bytes`; the check cost 90–130 µs a key on the dev machine). On every
    // core.
    let entries = db.scan_prefix([T_KEY]).collect::<Result<Vec<_>, _>>()?;
    let state = &*state;
    let keys = entries
        .par_iter()
        .map(|(k, v)| {
            let account = <[u8; 4]>::try_from(&k[1..]).map(u32::from_be_bytes).context("corrupt key record")?;
            if state.account(account).map(|a| a.pubkey_hash) != Some(circuits::hash::pubkey_hash(v)) {
                bail!("the saved key of account {account} is not the one its account holds: the directory is corrupt");
            }
            let key = PublicKey::from_stored_bytes(v)
                .map_err(|e| anyhow::anyhow!("corrupt key of account {account}: {e}"))?;
            Ok((account, key))
        })
        .collect::<Result<Vec<_>>>()?;
    registry.extend(keys);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_entries_round_trip_and_malformed_ones_are_refused() {
        let record =
            AccountRecord { pubkey_hash: circuits::hash::pubkey_hash(b"key"), nonce: 7, fee_balance: u64::MAX };
        let pool = Pool { token_a: 1, token_b: 3, reserve_a: u64::MAX, reserve_b: 5, fee_bps: 30 };
        for u in [
            Update::Balance { account: 9, token: 1023, amount: 0 },
            Update::Account { id: (1 << 24) - 1, record },
            Update::Pool { id: 4, pool },
        ] {
            let (k, v) = leaf_entry(&u);
            assert_eq!(decode_leaf(&k, &v).expect("decodes"), u);
            assert!(decode_leaf(&k, &v[1..]).is_err(), "short value");
            assert!(decode_leaf(&k, &[&v[..], &[0]].concat()).is_err(), "long value");
            assert!(decode_leaf(&k[..k.len() - 1], &v).is_err(), "short key");
        }
        let (k, mut v) = leaf_entry(&Update::Account { id: 1, record });
        v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_leaf(&k, &v).is_err(), "a digest element out of the field");
        assert!(decode_leaf(&[T_LEAF, b'x', 0, 0, 0, 1], &[]).is_err(), "unknown kind");
    }

    /// A directory from before the fee token's balance moved into the account leaf holds an
    /// earlier circuit's state: its leaves are refused, and the error says why.
    #[test]
    fn leaves_of_the_layout_before_the_fee_token_moved_are_refused_and_named() {
        let record = AccountRecord { pubkey_hash: circuits::hash::pubkey_hash(b"key"), nonce: 7, fee_balance: 5 };
        let (k, v) = leaf_entry(&Update::Account { id: 1, record });
        let old = &v[..ACCOUNT_VALUE_BEFORE_FEE_IN_LEAF];
        let fee_leaf = leaf_entry(&Update::Balance { account: 1, token: FEE_TOKEN, amount: 5 });
        for err in [decode_leaf(&k, old), decode_leaf(&fee_leaf.0, &fee_leaf.1)] {
            let err = err.expect_err("an earlier layout's leaf");
            assert!(err.is::<EarlierLayout>(), "{err:#}");
            assert!(err.to_string().contains("another network's state"), "{err:#}");
        }
    }
}
