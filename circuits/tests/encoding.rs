//! Canonical encoding: round trips, and every kind of malformed input rejected with its error.

use circuits::tx::{ENCODING_VERSION, POP_LEN, PUBKEY_LEN};
use circuits::*;
use proptest::prelude::*;

fn any_tx() -> impl Strategy<Value = Tx> {
    let transfer = (0u32..1 << 24, 0u32..1 << 24, 0u16..1024, any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
        |(from, to, token, amount, fee, nonce)| Tx::Transfer(Transfer { from, to, token, amount, fee, nonce }),
    );
    let swap = (0u32..1 << 24, 0u32..1 << 24, any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>())
        .prop_map(|(account, pool, d, amount_in, min_out, fee, nonce)| {
            let direction = if d { Direction::BToA } else { Direction::AToB };
            Tx::Swap(Swap { account, pool, direction, amount_in, min_out, fee, nonce })
        });
    let register =
        (0u32..1 << 24, prop::collection::vec(any::<u8>(), PUBKEY_LEN), prop::collection::vec(any::<u8>(), POP_LEN))
            .prop_map(|(account, k, p)| {
                let mut pubkey = [0u8; PUBKEY_LEN];
                pubkey.copy_from_slice(&k);
                let mut pop = [0u8; POP_LEN];
                pop.copy_from_slice(&p);
                Tx::Register(Register { account, pubkey, pop })
            });
    prop_oneof![transfer, swap, register]
}

proptest! {
    #[test]
    fn round_trip(tx in any_tx()) {
        let bytes = tx.encode();
        prop_assert_eq!(Tx::decode(&bytes), Ok(tx.clone()));
        // Every strict prefix is truncated, every extension has trailing bytes.
        for cut in 0..bytes.len() {
            let truncated = matches!(Tx::decode(&bytes[..cut]), Err(DecodeError::Truncated { .. }));
            prop_assert!(truncated, "prefix of {} bytes", cut);
        }
        let mut long = bytes.clone();
        long.push(0);
        prop_assert_eq!(Tx::decode(&long), Err(DecodeError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(tx) = Tx::decode(&bytes) {
            prop_assert_eq!(tx.encode(), bytes, "decoding is canonical");
        }
    }

    #[test]
    fn message_hash_covers_every_field(tx in any_tx(), pos in 2usize..26, bit in 0u8..8) {
        let mut bytes = tx.encode();
        let pos = pos.min(bytes.len() - 1);
        bytes[pos] ^= 1 << bit;
        if let Ok(other) = Tx::decode(&bytes) {
            prop_assert_ne!(other.message_hash(), tx.message_hash());
        }
    }
}

#[test]
fn malformed_inputs() {
    let t = Tx::Transfer(Transfer { from: 1, to: 2, token: 3, amount: 4, fee: 5, nonce: 6 }).encode();
    assert_eq!(Tx::decode(&[]), Err(DecodeError::Truncated { expected: 2, got: 0 }));
    let mut v = t.clone();
    v[0] = 2;
    assert_eq!(Tx::decode(&v), Err(DecodeError::UnsupportedVersion { expected: ENCODING_VERSION, got: 2 }));
    let mut v = t.clone();
    v[1] = 0;
    assert_eq!(Tx::decode(&v), Err(DecodeError::UnknownTag { tag: 0 }));
    v[1] = 9;
    assert_eq!(Tx::decode(&v), Err(DecodeError::UnknownTag { tag: 9 }));
    let mut v = t.clone();
    v[10] = 0x04; // token = 0x0403
    assert_eq!(Tx::decode(&v), Err(DecodeError::OutOfRange { field: "token", value: 0x0403, max: 1023 }));
    let mut v = t.clone();
    v[2] = 1; // from ≥ 2^24
    assert!(matches!(Tx::decode(&v), Err(DecodeError::OutOfRange { field: "from", .. })));
    let s =
        Tx::Swap(Swap { account: 1, pool: 2, direction: Direction::AToB, amount_in: 1, min_out: 0, fee: 0, nonce: 0 })
            .encode();
    let mut v = s.clone();
    v[10] = 2;
    assert_eq!(Tx::decode(&v), Err(DecodeError::OutOfRange { field: "direction", value: 2, max: 1 }));
    assert_eq!(Tx::decode(&s[..s.len() - 1]), Err(DecodeError::Truncated { expected: s.len(), got: s.len() - 1 }));
}
