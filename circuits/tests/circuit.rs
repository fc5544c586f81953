//! The executor is the circuit's oracle: batches it accepts prove with its roots and commitment;
//! for every class of transaction it rejects, a witness claiming the transaction valid cannot be
//! proven, while the nearest valid transaction from the same state can.

use std::sync::OnceLock;

use circuits::genesis::{devnet_pubkey, DEVNET_BALANCE};
use circuits::hash::ZERO_DIGEST;
use circuits::tx::commitment;
use circuits::*;
use proptest::prelude::*;
use prover_gpu::Prover;

mod common;
use common::{op, supply, to_tx};

const CAPACITY: usize = 4;

fn circuit() -> &'static BatchCircuit {
    static C: OnceLock<BatchCircuit> = OnceLock::new();
    C.get_or_init(|| BatchCircuit::build(CAPACITY).expect("build"))
}

fn prove_and_check(w: &BatchWitness) {
    let proof = circuit().prove(&Prover::cpu(), w).expect("a valid batch proves");
    let pi = circuit().verify(&proof).expect("plonky2's verifier accepts");
    assert_eq!(pi.old_root, w.old_root);
    assert_eq!(pi.new_root, w.new_root);
    assert_eq!(pi.commitment_in, w.commitment_in);
    assert_eq!(pi.commitment_out, w.commitment_out);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_agree(ops in prop::collection::vec(op(), 1..14)) {
        let mut ex = Executor::new(Genesis::devnet(8).build().expect("genesis"), CAPACITY);
        let before = supply(ex.state(), 0);
        let mut accepted = Vec::new();
        let mut batches = Vec::new();
        for op in &ops {
            let tx = to_tx(&ex, op);
            let before_tx = (ex.state().clone(), ex.open_len(), ex.pending_fees());
            match ex.apply(&tx) {
                Ok(_) => accepted.push(tx),
                Err(TxError::BatchFull { .. }) => {
                    batches.push(ex.seal_batch().expect("seal"));
                    ex.apply(&tx).map(|_| accepted.push(tx.clone())).ok();
                }
                Err(_) => prop_assert!(
                    (ex.state(), ex.open_len(), ex.pending_fees()) == (&before_tx.0, before_tx.1, before_tx.2),
                    "rejected {:?} changed the state",
                    tx
                ),
            }
            prop_assert_eq!(supply(ex.state(), ex.pending_fees()), before.clone());
        }
        batches.push(ex.seal_batch().expect("seal"));
        prop_assert_eq!(batches.last().map(|b| b.commitment_out), Some(commitment(ZERO_DIGEST, &accepted)));
        for w in &batches {
            prove_and_check(w);
        }
    }
}

/// `invalid` is rejected by the executor with `err`; a witness that applies it anyway does not
/// prove; `valid`, from the same state, does.
fn refused(genesis: &Genesis, setup: &[Tx], valid: Tx, invalid: Tx, err: TxError) {
    let fresh = || {
        let mut ex = Executor::new(genesis.build_unvalidated(), CAPACITY);
        for tx in setup {
            ex.apply(tx).expect("setup");
        }
        ex
    };
    let mut ex = fresh();
    assert_eq!(ex.apply(&invalid), Err(err.clone()));
    ex.apply(&valid).expect("the control transaction is valid");
    prove_and_check(&ex.seal_batch().expect("seal"));

    let mut ex = fresh();
    ex.apply_forged(&invalid);
    let forged = ex.seal_batch().expect("seal");
    match circuit().prove(&Prover::cpu(), &forged) {
        Err(CircuitError::Prove { gadget, .. }) => eprintln!("{err:?}: refused in {gadget:?}"),
        Err(e) => panic!("{err:?}: expected a proving failure, got {e}"),
        Ok(_) => panic!("{err:?}: the circuit proved a transaction the executor rejects"),
    }
}

fn g() -> Genesis {
    Genesis::devnet(8)
}

fn transfer(from: u32, to: u32, token: u16, amount: u64, fee: u64, nonce: u32) -> Tx {
    Tx::Transfer(Transfer { from, to, token, amount, fee, nonce })
}

fn swap(pool: u32, amount_in: u64, min_out: u64, nonce: u32) -> Tx {
    Tx::Swap(Swap { account: 2, pool, direction: Direction::AToB, amount_in, min_out, fee: 3, nonce })
}

#[test]
fn insufficient_balance_is_refused() {
    let b = DEVNET_BALANCE;
    let short = |account, token, needed, available| TxError::InsufficientBalance { account, token, needed, available };
    // Each: the valid transaction, the one a unit beyond it, and the executor's refusal.
    let cases = [
        (transfer(1, 2, 1, b, 1, 0), transfer(1, 2, 1, b + 1, 1, 0), short(1, 1, b + 1, b)),
        (transfer(1, 2, 1, 5, b, 0), transfer(1, 2, 1, 5, b + 1, 0), short(1, 0, b + 1, b)),
        (swap(3, b, 0, 0), swap(3, b + 1, 0, 0), short(2, 1, b + 1, b)),
        // The fee token's balance is the account leaf's: its amount, its amount and the fee
        // together, and a swap paying it.
        (transfer(1, 2, 0, b, 0, 0), transfer(1, 2, 0, b + 1, 0, 0), short(1, 0, b + 1, b)),
        (transfer(1, 2, 0, b - 5, 5, 0), transfer(1, 2, 0, b - 5, 6, 0), short(1, 0, 6, 5)),
        (swap(0, b - 3, 0, 0), swap(0, b - 2, 0, 0), short(2, 0, 3, 2)),
    ];
    for (valid, invalid, err) in cases {
        refused(&g(), &[], valid, invalid, err);
    }
}

#[test]
fn bad_nonce_is_refused() {
    refused(
        &g(),
        &[],
        transfer(1, 2, 1, 5, 1, 0),
        transfer(1, 2, 1, 5, 1, 1),
        TxError::BadNonce { account: 1, expected: 0, got: 1 },
    );
    let setup = [transfer(1, 2, 1, 5, 1, 0)];
    refused(
        &g(),
        &setup,
        transfer(1, 2, 1, 5, 1, 1),
        transfer(1, 2, 1, 5, 1, 0),
        TxError::BadNonce { account: 1, expected: 1, got: 0 },
    );
}

#[test]
fn unknown_accounts_and_pools_are_refused() {
    refused(
        &g(),
        &[],
        transfer(1, 2, 1, 5, 1, 0),
        transfer(1, 40, 1, 5, 1, 0),
        TxError::UnknownAccount { account: 40 },
    );
    refused(
        &g(),
        &[],
        transfer(1, 2, 1, 5, 1, 0),
        transfer(40, 2, 1, 5, 1, 0),
        TxError::UnknownAccount { account: 40 },
    );
    refused(&g(), &[], swap(3, 1000, 0, 0), swap(9, 1000, 0, 0), TxError::UnknownPool { pool: 9 });
}

#[test]
fn taken_account_ids_are_refused() {
    let reg = |account| Tx::Register(Register { account, pubkey: devnet_pubkey(account), pop: [0; 64] });
    refused(&g(), &[], reg(20), reg(3), TxError::AccountExists { account: 3 });
}

#[test]
fn zero_amounts_and_outputs_are_refused() {
    refused(&g(), &[], transfer(1, 2, 1, 1, 1, 0), transfer(1, 2, 1, 0, 1, 0), TxError::ZeroAmount);
    refused(&g(), &[], swap(3, 2, 0, 0), swap(3, 1, 0, 0), TxError::ZeroOutput);
}

#[test]
fn slippage_is_refused() {
    let out =
        circuits::swap::amount_out(10_000, circuits::genesis::DEVNET_RESERVE, circuits::genesis::DEVNET_RESERVE, 30)
            .expect("defined");
    refused(
        &g(),
        &[],
        swap(3, 10_000, out, 0),
        swap(3, 10_000, out + 1, 0),
        TxError::Slippage { out, min_out: out + 1 },
    );
}

#[test]
fn overflow_is_refused() {
    let mut genesis = Genesis::devnet(3);
    genesis.accounts[1].balances = vec![(0, 100), (1, 30)];
    genesis.accounts[2].balances = vec![(1, u64::MAX - 20)];
    refused(
        &genesis,
        &[],
        transfer(1, 2, 1, 20, 0, 0),
        transfer(1, 2, 1, 21, 0, 0),
        TxError::Overflow { what: "receiver balance" },
    );
    // The fee token's, in the account leaves: a transfer's receiver, and a swap's trader.
    genesis.accounts[2].balances = vec![(0, u64::MAX - 50), (1, 1_000)];
    refused(
        &genesis,
        &[],
        transfer(1, 2, 0, 50, 0, 0),
        transfer(1, 2, 0, 51, 0, 0),
        TxError::Overflow { what: "receiver balance" },
    );
    // Into pool 0's token 0: 50 in gives 49 out, 60 gives 59.
    let back = |amount_in| {
        Tx::Swap(Swap { account: 2, pool: 0, direction: Direction::BToA, amount_in, min_out: 0, fee: 0, nonce: 0 })
    };
    refused(&genesis, &[], back(50), back(60), TxError::Overflow { what: "trader balance" });
}

#[test]
fn a_batch_of_noops_proves_the_fee_free_identity() {
    let mut ex = Executor::new(Genesis::devnet(2).build().expect("genesis"), CAPACITY);
    let w = ex.seal_batch().expect("seal");
    assert_eq!(w.old_root, w.new_root);
    prove_and_check(&w);
}

#[test]
fn a_full_batch_of_every_kind_proves() {
    let mut ex = Executor::new(Genesis::devnet(8).build().expect("genesis"), CAPACITY);
    ex.apply(&transfer(1, 1, 0, 10, 2, 0)).expect("self transfer of the fee token");
    ex.apply(&Tx::Swap(Swap {
        account: 3,
        pool: 0,
        direction: Direction::BToA,
        amount_in: 5_000,
        min_out: 1,
        fee: 1,
        nonce: 0,
    }))
    .expect("swap into the fee token");
    ex.apply(&Tx::Register(Register { account: 77, pubkey: devnet_pubkey(77), pop: [0; 64] })).expect("register");
    ex.apply(&transfer(0, 77, 2, 10, 0, 0)).expect("the operator pays the new account");
    prove_and_check(&ex.seal_batch().expect("seal"));
}

#[test]
fn a_witness_for_other_roots_is_refused() {
    let mut ex = Executor::new(Genesis::devnet(4).build().expect("genesis"), CAPACITY);
    ex.apply(&transfer(1, 2, 1, 5, 1, 0)).expect("valid");
    let mut w = ex.seal_batch().expect("seal");
    w.old_account_root = ZERO_DIGEST;
    assert!(matches!(circuit().prove(&Prover::cpu(), &w), Err(CircuitError::Prove { .. })));
    let mut too_many = w.clone();
    too_many.slots = vec![w.slots[0].clone(); CAPACITY + 1];
    assert!(matches!(circuit().prove(&Prover::cpu(), &too_many), Err(CircuitError::Witness(_))));
}

/// Ids and tokens beyond their trees: the same witness with the field raised by the tree's size
/// (so every path still matches) fails only on the range of the field.
#[test]
fn out_of_range_fields_are_refused() {
    let reg = Tx::Register(Register { account: 20, pubkey: devnet_pubkey(20), pop: [0; 64] });
    let t = Transfer { from: 1, to: 2, token: 1, amount: 5, fee: 1, nonce: 0 };
    let raised = [
        Tx::Register(Register { account: 20 + (1 << 24), pubkey: devnet_pubkey(20), pop: [0; 64] }),
        Tx::Transfer(Transfer { to: 2 + (1 << 24), ..t }),
        Tx::Transfer(Transfer { token: 1 + 1024, ..t }),
    ];
    for (valid, invalid) in [reg, Tx::Transfer(t), Tx::Transfer(t)].into_iter().zip(raised) {
        let mut ex = Executor::new(g().build().expect("genesis"), CAPACITY);
        assert!(matches!(ex.apply(&invalid), Err(TxError::OutOfRange { .. })));
        ex.apply(&valid).expect("valid");
        let w = ex.seal_batch().expect("seal");
        prove_and_check(&w);
        let mut forged = w.clone();
        forged.slots[0].tx = Some(invalid.clone());
        forged.commitment_out = commitment(ZERO_DIGEST, [&invalid]);
        match circuit().prove(&Prover::cpu(), &forged) {
            Err(CircuitError::Prove { gadget, .. }) => {
                eprintln!("tag {} out of range: refused in {gadget:?}", invalid.tag())
            }
            other => panic!("{invalid:?}: expected a proving failure, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn every_gate_of_the_batch_circuit_has_device_quotient_code() {
    // Batch proofs are most of the proving work: their quotient must not fall back to the CPU on
    // a GPU. A new gate in the circuit needs its constraints in prover-gpu's quotient.cuh.
    let common = &circuit().data().common;
    let selectors = prover_gpu::quotient::Selectors::of(common).expect("selectors");
    let program = prover_gpu::GateProgram::of(common, &selectors).expect("the C quotient covers the batch circuit");
    assert_eq!(program.gates.len(), common.gates.len());
}

#[test]
fn padding_that_cannot_hold_the_batch_is_refused() {
    let few = Padding { public_inputs: circuits::circuit::NUM_PUBLIC_INPUTS - 1, ..Padding::default() };
    assert!(matches!(BatchCircuit::build_padded(1, &few), Err(CircuitError::Config(_))));
    let huge = Padding { min_degree_bits: circuits::MAX_BATCH_DEGREE_BITS + 1, ..Padding::default() };
    assert!(matches!(BatchCircuit::build_padded(1, &huge), Err(CircuitError::Config(_))));
}
