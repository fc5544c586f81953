//! Transactions: types, canonical byte encoding, the message a sender signs, and the field
//! elements the batch circuit commits to.
//!
//! Encoding (version 1, big-endian integers): `version:u8 ‖ tag:u8 ‖ body`, where the body is
//! - `Register` (tag 1): `account:u32 ‖ pubkey:[u8;128] ‖ pop:[u8;64]`
//! - `Transfer` (tag 2): `from:u32 ‖ to:u32 ‖ token:u16 ‖ amount:u64 ‖ fee:u64 ‖ nonce:u32`
//! - `Swap` (tag 3): `account:u32 ‖ pool:u32 ‖ direction:u8 ‖ amount_in:u64 ‖ min_out:u64 ‖ fee:u64 ‖ nonce:u32`

use plonky2::field::types::Field;

use crate::error::DecodeError;
use crate::hash::{hash_elements, pubkey_hash, u64_limbs, Digest, ACCOUNT_DEPTH, F, POOL_DEPTH, TOKEN_DEPTH};

/// The encoding version this build writes and reads.
pub const ENCODING_VERSION: u8 = 1;
/// Length of a BLS public key (G2, uncompressed, EIP-197 layout).
pub const PUBKEY_LEN: usize = 128;
/// Length of a proof of possession (G1, uncompressed).
pub const POP_LEN: usize = 64;
/// Number of field elements a transaction contributes to the batch commitment.
pub const TX_ELEMENTS: usize = 15;
/// Domain tag mixed into every message hash ("rollup-tx" as a number).
pub const MESSAGE_DOMAIN: u64 = 0x726f_6c6c_7570_7478;

/// Tag of the padding no-op in the circuit (never encoded: it is not a transaction anyone sends).
pub const TAG_NOOP: u8 = 0;
/// Tag of `Register`.
pub const TAG_REGISTER: u8 = 1;
/// Tag of `Transfer`.
pub const TAG_TRANSFER: u8 = 2;
/// Tag of `Swap`.
pub const TAG_SWAP: u8 = 3;

/// Which way a swap trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Pay `token_a`, receive `token_b`.
    AToB,
    /// Pay `token_b`, receive `token_a`.
    BToA,
}

impl Direction {
    fn as_u8(self) -> u8 {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }
}

/// Creates an account bound to a BLS public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Register {
    /// The new account's id (must be free).
    pub account: u32,
    /// The BLS public key (G2, uncompressed).
    pub pubkey: [u8; PUBKEY_LEN],
    /// Proof of possession of the key's secret (G1 signature over the key).
    pub pop: [u8; POP_LEN],
}

/// Moves `amount` of `token` from one account to another, paying `fee` in the fee token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Sender.
    pub from: u32,
    /// Receiver.
    pub to: u32,
    /// Token moved.
    pub token: u16,
    /// Amount moved (positive).
    pub amount: u64,
    /// Fee paid to the operator in [`crate::state::FEE_TOKEN`].
    pub fee: u64,
    /// The sender's nonce.
    pub nonce: u32,
}

/// Trades `amount_in` against a pool, receiving at least `min_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Swap {
    /// The trader.
    pub account: u32,
    /// The pool.
    pub pool: u32,
    /// Which token is paid in.
    pub direction: Direction,
    /// Amount paid in (positive).
    pub amount_in: u64,
    /// Least acceptable output.
    pub min_out: u64,
    /// Fee paid to the operator in [`crate::state::FEE_TOKEN`].
    pub fee: u64,
    /// The trader's nonce.
    pub nonce: u32,
}

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tx {
    /// See [`Register`].
    Register(Register),
    /// See [`Transfer`].
    Transfer(Transfer),
    /// See [`Swap`].
    Swap(Swap),
}

const REGISTER_LEN: usize = 2 + 4 + PUBKEY_LEN + POP_LEN;
const TRANSFER_LEN: usize = 2 + 4 + 4 + 2 + 8 + 8 + 4;
const SWAP_LEN: usize = 2 + 4 + 4 + 1 + 8 + 8 + 8 + 4;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

fn check_range(field: &'static str, value: u64, bits: usize) -> Result<(), DecodeError> {
    let max = (1u64 << bits) - 1;
    if value > max {
        return Err(DecodeError::OutOfRange { field, value, max });
    }
    Ok(())
}

impl Tx {
    /// The tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Tx::Register(_) => TAG_REGISTER,
            Tx::Transfer(_) => TAG_TRANSFER,
            Tx::Swap(_) => TAG_SWAP,
        }
    }

    /// The account that sends (signs) the transaction.
    pub fn sender(&self) -> u32 {
        match self {
            Tx::Register(r) => r.account,
            Tx::Transfer(t) => t.from,
            Tx::Swap(s) => s.account,
        }
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION, self.tag()];
        match self {
            Tx::Register(r) => {
                out.extend_from_slice(&r.account.to_be_bytes());
                out.extend_from_slice(&r.pubkey);
                out.extend_from_slice(&r.pop);
            }
            Tx::Transfer(t) => {
                out.extend_from_slice(&t.from.to_be_bytes());
                out.extend_from_slice(&t.to.to_be_bytes());
                out.extend_from_slice(&t.token.to_be_bytes());
                out.extend_from_slice(&t.amount.to_be_bytes());
                out.extend_from_slice(&t.fee.to_be_bytes());
                out.extend_from_slice(&t.nonce.to_be_bytes());
            }
            Tx::Swap(s) => {
                out.extend_from_slice(&s.account.to_be_bytes());
                out.extend_from_slice(&s.pool.to_be_bytes());
                out.push(s.direction.as_u8());
                out.extend_from_slice(&s.amount_in.to_be_bytes());
                out.extend_from_slice(&s.min_out.to_be_bytes());
                out.extend_from_slice(&s.fee.to_be_bytes());
                out.extend_from_slice(&s.nonce.to_be_bytes());
            }
        }
        out
    }

    /// Parses canonical bytes; rejects short, trailing, unknown-version, unknown-tag and
    /// out-of-range input.
    pub fn decode(bytes: &[u8]) -> Result<Tx, DecodeError> {
        if bytes.len() < 2 {
            return Err(DecodeError::Truncated { expected: 2, got: bytes.len() });
        }
        if bytes[0] != ENCODING_VERSION {
            return Err(DecodeError::UnsupportedVersion { expected: ENCODING_VERSION, got: bytes[0] });
        }
        let expected = match bytes[1] {
            TAG_REGISTER => REGISTER_LEN,
            TAG_TRANSFER => TRANSFER_LEN,
            TAG_SWAP => SWAP_LEN,
            tag => return Err(DecodeError::UnknownTag { tag }),
        };
        if bytes.len() < expected {
            return Err(DecodeError::Truncated { expected, got: bytes.len() });
        }
        if bytes.len() > expected {
            return Err(DecodeError::TrailingBytes { extra: bytes.len() - expected });
        }
        let mut r = Reader { bytes, pos: 2 };
        let tx = match bytes[1] {
            TAG_REGISTER => {
                let account = r.u32();
                check_range("account", account.into(), ACCOUNT_DEPTH)?;
                Tx::Register(Register { account, pubkey: r.take(), pop: r.take() })
            }
            TAG_TRANSFER => {
                let t = Transfer {
                    from: r.u32(),
                    to: r.u32(),
                    token: r.u16(),
                    amount: r.u64(),
                    fee: r.u64(),
                    nonce: r.u32(),
                };
                check_range("from", t.from.into(), ACCOUNT_DEPTH)?;
                check_range("to", t.to.into(), ACCOUNT_DEPTH)?;
                check_range("token", t.token.into(), TOKEN_DEPTH)?;
                Tx::Transfer(t)
            }
            _ => {
                let account = r.u32();
                let pool = r.u32();
                let direction = match r.u8() {
                    0 => Direction::AToB,
                    1 => Direction::BToA,
                    d => return Err(DecodeError::OutOfRange { field: "direction", value: d.into(), max: 1 }),
                };
                let s = Swap {
                    account,
                    pool,
                    direction,
                    amount_in: r.u64(),
                    min_out: r.u64(),
                    fee: r.u64(),
                    nonce: r.u32(),
                };
                check_range("account", s.account.into(), ACCOUNT_DEPTH)?;
                check_range("pool", s.pool.into(), POOL_DEPTH)?;
                Tx::Swap(s)
            }
        };
        Ok(tx)
    }

    /// The fifteen field elements the batch commitment absorbs for this transaction:
    /// `[tag, a, b, token_or_direction, amount_lo, amount_hi, min_out_lo, min_out_hi, fee_lo,
    /// fee_hi, nonce, pubkey_hash[0..4]]`, with unused fields zero. `a` is the sender, `b` the
    /// receiver or the pool.
    pub fn elements(&self) -> [F; TX_ELEMENTS] {
        let mut e = [F::ZERO; TX_ELEMENTS];
        e[0] = F::from_canonical_u8(self.tag());
        let set_u64 = |e: &mut [F; TX_ELEMENTS], at: usize, x: u64| {
            let [lo, hi] = u64_limbs(x);
            e[at] = lo;
            e[at + 1] = hi;
        };
        match self {
            Tx::Register(r) => {
                e[1] = F::from_canonical_u32(r.account);
                e[11..15].copy_from_slice(&pubkey_hash(&r.pubkey).elements);
            }
            Tx::Transfer(t) => {
                e[1] = F::from_canonical_u32(t.from);
                e[2] = F::from_canonical_u32(t.to);
                e[3] = F::from_canonical_u16(t.token);
                set_u64(&mut e, 4, t.amount);
                set_u64(&mut e, 8, t.fee);
                e[10] = F::from_canonical_u32(t.nonce);
            }
            Tx::Swap(s) => {
                e[1] = F::from_canonical_u32(s.account);
                e[2] = F::from_canonical_u32(s.pool);
                e[3] = F::from_canonical_u8(s.direction.as_u8());
                set_u64(&mut e, 4, s.amount_in);
                set_u64(&mut e, 6, s.min_out);
                set_u64(&mut e, 8, s.fee);
                e[10] = F::from_canonical_u32(s.nonce);
            }
        }
        e
    }

    /// The digest a sender signs: `hash_no_pad(MESSAGE_DOMAIN ‖ elements())`. It covers every
    /// field that changes the state, including the registered key's hash.
    pub fn message_hash(&self) -> Digest {
        let mut input = vec![F::from_canonical_u64(MESSAGE_DOMAIN)];
        input.extend_from_slice(&self.elements());
        hash_elements(&input)
    }
}

/// One step of the transaction commitment chain: `hash_no_pad(prev ‖ tx.elements())`.
pub fn commit_step(prev: Digest, tx: &Tx) -> Digest {
    let mut input = prev.elements.to_vec();
    input.extend_from_slice(&tx.elements());
    hash_elements(&input)
}

/// The commitment to a sequence of transactions, continuing a chain from `start`.
pub fn commitment<'a>(start: Digest, txs: impl IntoIterator<Item = &'a Tx>) -> Digest {
    txs.into_iter().fold(start, commit_step)
}
