//! BLS on BN254: signatures, aggregates, batch checks, proofs of possession and every encoding,
//! with bad points refused with their reason.

use ark_bn254::{Bn254, Fq, Fq2, G1Affine, G2Affine};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup};
use ark_ff::{BigInteger, PrimeField};
use circuits::bls::batch::{find_invalid, SignedMessage};
use circuits::bls::encoding::*;
use circuits::bls::*;
use circuits::genesis::{devnet_key, devnet_pubkey};
use circuits::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn sign_and_verify() {
    let mut r = rng();
    let sk = SecretKey::random(&mut r);
    let pk = sk.public_key();
    let sig = sk.sign(b"hello");
    assert_eq!(verify(&pk, b"hello", &sig), Ok(()));
    assert_eq!(verify(&pk, b"hullo", &sig), Err(BlsError::InvalidSignature), "wrong message");
    let other = SecretKey::random(&mut r).public_key();
    assert_eq!(verify(&other, b"hello", &sig), Err(BlsError::InvalidSignature), "wrong key");
    let tampered = Signature((sig.0 + G1Affine::generator()).into_affine());
    assert_eq!(verify(&pk, b"hello", &tampered), Err(BlsError::InvalidSignature));
    // The pairing equation as any BN254 implementation states it: e(sig, g2) = e(H(m), pk).
    assert_eq!(Bn254::pairing(sig.0, G2Affine::generator()), Bn254::pairing(message_point(b"hello"), pk.0));
}

#[test]
fn transactions_are_signed_over_their_message_hash() {
    let sk = devnet_key(3);
    let tx = Tx::Transfer(Transfer { from: 3, to: 4, token: 1, amount: 9, fee: 1, nonce: 0 });
    let sig = sk.sign_tx(&tx);
    assert_eq!(verify_tx(&sk.public_key(), &tx, &sig), Ok(()));
    let other = Tx::Transfer(Transfer { from: 3, to: 4, token: 1, amount: 10, fee: 1, nonce: 0 });
    assert_eq!(verify_tx(&sk.public_key(), &other, &sig), Err(BlsError::InvalidSignature));
    let signed = SignedTx { tx: tx.clone(), signature: sig };
    assert_eq!(SignedTx::decode(&signed.encode()), Ok(signed.clone()));
    let bytes = signed.encode();
    assert!(matches!(SignedTx::decode(&bytes[..10]), Err(SignedTxError::Truncated { .. })));
    assert!(matches!(SignedTx::decode(&bytes[1..]), Err(SignedTxError::Tx(_))));
}

#[test]
fn seeds_give_the_devnet_keys() {
    assert_eq!(SecretKey::from_seed(b"devnet-3"), devnet_key(3));
    assert_ne!(devnet_key(3), devnet_key(4));
    let state = Genesis::devnet(5).build().expect("genesis");
    let pkh = circuits::hash::pubkey_hash(&devnet_pubkey(3));
    assert_eq!(state.account(3).map(|a| a.pubkey_hash), Some(pkh));
}

#[test]
fn aggregates_over_distinct_messages() {
    let mut r = rng();
    let keys: Vec<SecretKey> = (0..20).map(|_| SecretKey::random(&mut r)).collect();
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| format!("message {i}").into_bytes()).collect();
    let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let signers: Vec<(PublicKey, &[u8])> = keys.iter().zip(&msgs).map(|(k, m)| (k.public_key(), &m[..])).collect();
    let agg = aggregate(&sigs);
    let keys = KeyCache::new(64);
    assert_eq!(aggregate_verify(&signers, &agg, &keys), Ok(()));
    let tampered = Signature((agg.0 + G1Affine::generator()).into_affine());
    assert_eq!(aggregate_verify(&signers, &tampered, &keys), Err(BlsError::InvalidSignature));
    assert_eq!(aggregate_verify(&signers[1..], &agg, &keys), Err(BlsError::InvalidSignature), "a missing signer");
    let mut swapped = signers.clone();
    swapped.swap(0, 1);
    swapped[0].1 = signers[0].1;
    assert_eq!(
        aggregate_verify(&swapped, &agg, &keys),
        Err(BlsError::InvalidSignature),
        "a message under the wrong key"
    );
    assert_eq!(aggregate_verify(&[], &agg, &keys), Err(BlsError::Empty));
}

#[test]
fn one_bad_signature_among_a_thousand_is_named() {
    let mut r = rng();
    let keys: Vec<SecretKey> = (0..8).map(|_| SecretKey::random(&mut r)).collect();
    let cache = KeyCache::new(64);
    let mut items: Vec<SignedMessage> = (0..1000)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let message = format!("tx {i}").into_bytes();
            SignedMessage { public_key: k.public_key(), signature: k.sign(&message), message }
        })
        .collect();
    assert_eq!(find_invalid(&items, &cache, &mut r), Vec::<usize>::new());
    items[617].message = b"changed".to_vec();
    assert_eq!(find_invalid(&items, &cache, &mut r), vec![617]);
    items[3].signature = items[4].signature;
    assert_eq!(find_invalid(&items, &cache, &mut r), vec![3, 617]);
}

#[test]
fn proofs_of_possession_stop_rogue_keys() {
    let sk = devnet_key(9);
    let pk = sk.public_key();
    let reg = Register { account: 9, pubkey: pk.to_bytes(), pop: sk.proof_of_possession().to_bytes() };
    assert_eq!(register_key(&reg), Ok(pk));
    // A rogue key (another's key minus the victim's) cannot prove possession of its secret; a
    // pop made with another key, or a transaction signature in its place, fails too.
    let victim = devnet_key(1).public_key();
    let rogue = PublicKey((pk.0.into_group() - victim.0).into_affine());
    let forged = Register { pubkey: rogue.to_bytes(), ..reg.clone() };
    assert_eq!(register_key(&forged), Err(BlsError::InvalidProofOfPossession));
    let wrong_domain = Register { pop: sk.sign(&pk.to_bytes()).to_bytes(), ..reg.clone() };
    assert_eq!(register_key(&wrong_domain), Err(BlsError::InvalidProofOfPossession));
    let bad_key = Register { pubkey: [0; 128], ..reg };
    assert_eq!(register_key(&bad_key), Err(BlsError::Identity));
}

fn fq_bytes(x: &Fq) -> Vec<u8> {
    x.into_bigint().to_bytes_be()
}

#[test]
fn bad_points_are_refused_with_their_reason() {
    let sk = devnet_key(2);
    let sig = sk.sign(b"m").to_bytes();
    let pk = sk.public_key().to_bytes();
    // Off the curve.
    let mut off = sig;
    off[63] ^= 1;
    assert_eq!(Signature::from_bytes(&off), Err(BlsError::NotOnCurve));
    let mut off = pk;
    off[127] ^= 1;
    assert_eq!(PublicKey::from_bytes(&off), Err(BlsError::NotOnCurve));
    // The identity.
    assert_eq!(Signature::from_bytes(&[0; 64]), Err(BlsError::Identity));
    assert_eq!(PublicKey::from_bytes(&[0; 128]), Err(BlsError::Identity));
    // A coordinate at or above the modulus.
    let mut big = sig;
    big[..32].copy_from_slice(&[0xff; 32]);
    assert_eq!(Signature::from_bytes(&big), Err(BlsError::NonCanonicalCoordinate));
    // Wrong lengths.
    assert_eq!(Signature::from_bytes(&sig[..63]), Err(BlsError::Length { expected: 64, got: 63 }));
    assert_eq!(PublicKey::from_bytes(&[1; 129]), Err(BlsError::Length { expected: 128, got: 129 }));
    // A point of the twist outside the prime-order subgroup.
    let outside = (1u64..)
        .find_map(|i| {
            let p = G2Affine::get_point_from_x_unchecked(Fq2::new(Fq::from(i), Fq::from(1u64)), true)?;
            (!p.is_in_correct_subgroup_assuming_on_curve()).then_some(p)
        })
        .expect("the twist has points outside the subgroup");
    let mut bytes = Vec::new();
    for c in [outside.x.c1, outside.x.c0, outside.y.c1, outside.y.c0] {
        bytes.extend(fq_bytes(&c));
    }
    assert_eq!(PublicKey::from_bytes(&bytes), Err(BlsError::NotInSubgroup));
    // Stored bytes skip only that check: everything else above is still refused.
    assert_eq!(PublicKey::from_stored_bytes(&bytes).map(|k| k.to_bytes().to_vec()), Ok(bytes.clone()));
    let mut off = pk;
    off[127] ^= 1;
    assert_eq!(PublicKey::from_stored_bytes(&off), Err(BlsError::NotOnCurve));
    assert_eq!(PublicKey::from_stored_bytes(&[0; 128]), Err(BlsError::Identity));
    let mut big = pk;
    big[..32].copy_from_slice(&[0xff; 32]);
    assert_eq!(PublicKey::from_stored_bytes(&big), Err(BlsError::NonCanonicalCoordinate));
    assert_eq!(PublicKey::from_stored_bytes(&[1; 129]), Err(BlsError::Length { expected: 128, got: 129 }));
    assert_eq!(PublicKey::from_stored_bytes(&pk), PublicKey::from_bytes(&pk));
    assert_eq!(g2_from_compressed(&g2_to_compressed(&outside)), Err(BlsError::NotInSubgroup));
    assert_eq!(g1_from_compressed(&[0u8; 31]), Err(BlsError::Length { expected: 32, got: 31 }));
    assert_eq!(g1_from_compressed(&g1_to_compressed(&G1Affine::zero())), Err(BlsError::Identity));
    // Secret keys: zero and out of range.
    assert_eq!(SecretKey::from_bytes(&[0; 32]), Err(BlsError::InvalidSecretKey));
    assert_eq!(SecretKey::from_bytes(&[0xff; 32]), Err(BlsError::InvalidSecretKey));
}

#[test]
fn every_encoding_round_trips() {
    let mut r = rng();
    for _ in 0..10 {
        let sk = SecretKey::random(&mut r);
        assert_eq!(SecretKey::from_bytes(&sk.to_bytes()), Ok(sk.clone()));
        let pk = sk.public_key();
        let sig = sk.sign(b"x");
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
        assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig));
        assert_eq!(g2_from_compressed(&g2_to_compressed(&pk.0)), Ok(pk.0));
        assert_eq!(g1_from_compressed(&g1_to_compressed(&sig.0)), Ok(sig.0));
        assert_eq!(g1_to_compressed(&sig.0).len(), 32);
        assert_eq!(g2_to_compressed(&pk.0).len(), 64);
    }
    // EIP-197 puts the imaginary part first.
    let g2 = G2Affine::generator();
    let bytes = g2_to_bytes(&g2);
    assert_eq!(&bytes[..32], &fq_bytes(&g2.x.c1)[..]);
    assert_eq!(&bytes[32..64], &fq_bytes(&g2.x.c0)[..]);
}
