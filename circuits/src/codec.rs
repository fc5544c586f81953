//! Compact binary encoding of batch witnesses, so a batch job carries its whole witness to a
//! stateless worker. Little-endian integers; digests as four canonical u64s; paths with their
//! length; transactions in their canonical encoding with a length prefix. Decoding checks every
//! length and value and never panics.

use plonky2::field::types::{Field, Field64, PrimeField64};

use crate::hash::{Digest, F};
use crate::state::{AccountRecord, Pool};
use crate::tx::Tx;
use crate::witness::{BalanceStep, BatchWitness, OperatorWitness, SlotWitness};

/// Why bytes are not a batch witness.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed batch witness: {0}")]
pub struct CodecError(pub String);

/// `RBW2` since the fee token's balance moved into the account record (and out of the slot's
/// balance steps): a witness of the earlier layout is refused as not a batch witness.
const MAGIC: &[u8; 4] = b"RBW2";
/// Paths and slot counts above this are refused before anything is allocated.
const MAX_LEN: usize = 1 << 16;

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn digest(&mut self, d: &Digest) {
        for e in d.elements {
            self.u64(e.to_canonical_u64());
        }
    }
    fn path(&mut self, p: &[Digest]) {
        self.u32(p.len() as u32);
        p.iter().for_each(|d| self.digest(d));
    }
    fn record(&mut self, r: &AccountRecord) {
        self.digest(&r.pubkey_hash);
        self.u32(r.nonce);
        self.u64(r.fee_balance);
    }
}

struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| CodecError("truncated".into()))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n > MAX_LEN {
            return Err(CodecError(format!("length {n} too large")));
        }
        Ok(n)
    }
    fn digest(&mut self) -> Result<Digest, CodecError> {
        let mut elements = [F::ZERO; 4];
        for e in &mut elements {
            let v = self.u64()?;
            if v >= F::ORDER {
                return Err(CodecError("non-canonical field element".into()));
            }
            *e = F::from_canonical_u64(v);
        }
        Ok(Digest { elements })
    }
    fn path(&mut self) -> Result<Vec<Digest>, CodecError> {
        let n = self.len()?;
        (0..n).map(|_| self.digest()).collect()
    }
    fn record(&mut self) -> Result<AccountRecord, CodecError> {
        Ok(AccountRecord { pubkey_hash: self.digest()?, nonce: self.u32()?, fee_balance: self.u64()? })
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        u16::try_from(self.u32()?).map_err(|_| CodecError("token id out of range".into()))
    }
}

impl BatchWitness {
    /// Binary encoding (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = W(MAGIC.to_vec());
        for d in [
            &self.old_account_root,
            &self.old_pool_root,
            &self.old_root,
            &self.new_root,
            &self.commitment_in,
            &self.commitment_out,
        ] {
            w.digest(d);
        }
        let o = &self.operator;
        w.record(&o.record);
        w.digest(&o.balance_root);
        w.path(&o.account_path);
        w.u64(o.fee_total);
        w.u32(self.slots.len() as u32);
        for s in &self.slots {
            match &s.tx {
                None => w.u32(0),
                Some(tx) => {
                    let b = tx.encode();
                    w.u32(b.len() as u32);
                    w.0.extend_from_slice(&b);
                }
            }
            w.record(&s.a_record);
            w.digest(&s.a_balance_root);
            w.path(&s.a_path);
            for st in &s.steps {
                w.u8(st.enabled as u8);
                w.u64(st.old);
                w.path(&st.path);
            }
            w.record(&s.b_record);
            w.digest(&s.b_balance_root);
            let p = &s.pool;
            for x in [p.token_a as u32, p.token_b as u32, p.fee_bps as u32] {
                w.u32(x);
            }
            w.u64(p.reserve_a);
            w.u64(p.reserve_b);
            w.path(&s.b_path);
            w.u64(s.out);
        }
        w.0
    }

    /// Decodes [`BatchWitness::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = R { b: bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(CodecError("not a batch witness".into()));
        }
        let mut d = || r.digest();
        let (old_account_root, old_pool_root, old_root, new_root, commitment_in, commitment_out) =
            (d()?, d()?, d()?, d()?, d()?, d()?);
        let operator = OperatorWitness {
            record: r.record()?,
            balance_root: r.digest()?,
            account_path: r.path()?,
            fee_total: r.u64()?,
        };
        let n = r.len()?;
        let mut slots = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let len = r.len()?;
            let tx =
                if len == 0 { None } else { Some(Tx::decode(r.take(len)?).map_err(|e| CodecError(e.to_string()))?) };
            let a_record = r.record()?;
            let a_balance_root = r.digest()?;
            let a_path = r.path()?;
            let mut step = || -> Result<BalanceStep, CodecError> {
                let enabled = match r.u8()? {
                    0 => false,
                    1 => true,
                    x => return Err(CodecError(format!("bad flag {x}"))),
                };
                Ok(BalanceStep { enabled, old: r.u64()?, path: r.path()? })
            };
            let steps = [step()?, step()?];
            let b_record = r.record()?;
            let b_balance_root = r.digest()?;
            let (token_a, token_b) = (r.u16()?, r.u16()?);
            let fee_bps = r.u16()?;
            let pool = Pool { token_a, token_b, fee_bps, reserve_a: r.u64()?, reserve_b: r.u64()? };
            let b_path = r.path()?;
            let out = r.u64()?;
            slots.push(SlotWitness {
                tx,
                a_record,
                a_balance_root,
                a_path,
                steps,
                b_record,
                b_balance_root,
                pool,
                b_path,
                out,
            });
        }
        if r.pos != bytes.len() {
            return Err(CodecError("trailing bytes".into()));
        }
        Ok(BatchWitness {
            slots,
            operator,
            old_account_root,
            old_pool_root,
            old_root,
            new_root,
            commitment_in,
            commitment_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::genesis::devnet_pubkey;
    use crate::*;

    #[test]
    fn round_trip_and_malformed() {
        let mut ex = Executor::new(Genesis::devnet(4).build().expect("genesis"), 4);
        ex.apply(&Tx::Transfer(Transfer { from: 1, to: 2, token: 1, amount: 5, fee: 1, nonce: 0 })).expect("t");
        ex.apply(&Tx::Swap(Swap {
            account: 2,
            pool: 0,
            direction: Direction::AToB,
            amount_in: 100,
            min_out: 0,
            fee: 0,
            nonce: 0,
        }))
        .expect("s");
        ex.apply(&Tx::Register(Register { account: 9, pubkey: devnet_pubkey(9), pop: [0; 64] })).expect("r");
        let w = ex.seal_batch().expect("seal");
        let bytes = w.to_bytes();
        assert_eq!(BatchWitness::from_bytes(&bytes), Ok(w));
        for cut in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(BatchWitness::from_bytes(&bytes[..cut]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(BatchWitness::from_bytes(&long).is_err());
        let mut huge = bytes.clone();
        // The operator's account-path length, made enormous, is refused without allocating.
        let at = 4 + 6 * 32 + 44 + 32;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BatchWitness::from_bytes(&huge).is_err());
    }
}
