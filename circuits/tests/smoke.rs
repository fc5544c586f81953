use circuits::genesis::devnet_pubkey;
use circuits::*;

#[test]
fn smoke_prove_mixed_batch() {
    let state = Genesis::devnet(8).build().unwrap();
    let mut ex = Executor::new(state, 4);
    ex.apply(&Tx::Transfer(Transfer { from: 1, to: 2, token: 1, amount: 5, fee: 3, nonce: 0 })).unwrap();
    ex.apply(&Tx::Swap(Swap { account: 3, pool: 0, direction: Direction::BToA, amount_in: 1_000_000, min_out: 1, fee: 2, nonce: 0 })).unwrap();
    ex.apply(&Tx::Register(Register { account: 100, pubkey: devnet_pubkey(100), pop: [0; 64] })).unwrap();
    let w = ex.seal_batch().unwrap();
    let t = std::time::Instant::now();
    let c = BatchCircuit::build(4).unwrap();
    eprintln!("{:?} build {:?}", c.stats(), t.elapsed());
    let t = std::time::Instant::now();
    let p = c.prove(&w).unwrap();
    eprintln!("prove {:?}", t.elapsed());
    let pi = c.verify(&p).unwrap();
    assert_eq!(pi.new_root, w.new_root);
    assert_eq!(pi.old_root, w.old_root);
    assert_eq!(pi.commitment_out, w.commitment_out);
}
