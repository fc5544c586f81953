//! `gates::RangeCheckGate`: its constraints hold exactly on values below its bound, its three
//! evaluations (extension, base field, recursive) agree and have the degree it claims, and
//! whole proofs with it verify, while a value at the bound stops witness generation at its row.

use plonky2::field::extension::Extendable;
use plonky2::field::types::{Field, Field64};
use plonky2::gates::gate::Gate;
use plonky2::gates::gate_testing::{test_eval_fns, test_low_degree};
use plonky2::hash::hash_types::HashOut;
use plonky2::iop::target::Target;
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{CircuitConfig, CircuitData};
use plonky2::plonk::vars::EvaluationVars;
use prover_gpu::gates::{range_check, RangeCheckGate};
use prover_gpu::{prove, BackendError, Config, RayonBackend, F};

const D: usize = 2;
type FE = <F as Extendable<D>>::Extension;

const WIDTHS: [usize; 8] = [1, 2, 14, 16, 31, 32, 36, 63];

fn gate(bits: usize) -> RangeCheckGate {
    RangeCheckGate::new_from_config(&CircuitConfig::standard_recursion_config(), bits)
}

/// The gate's wires for `values`, limbs as the generator writes them, then `tamper` applied.
fn wires(g: &RangeCheckGate, values: &[u64], tamper: impl FnOnce(&mut Vec<u64>)) -> Vec<FE> {
    let mut w = vec![0u64; Gate::<F, D>::num_wires(g)];
    for (op, &v) in values.iter().enumerate() {
        w[RangeCheckGate::wire_value(op)] = v;
        for j in 0..g.limbs() {
            w[g.wire_limb(op, j)] = (v >> (2 * j)) & 3;
        }
    }
    tamper(&mut w);
    w.into_iter().map(|v| FE::from_canonical_u64(v % F::ORDER)).collect()
}

fn violated(g: &RangeCheckGate, w: &[FE]) -> Vec<usize> {
    let hash = HashOut::ZERO;
    let vars = EvaluationVars { local_constants: &[], local_wires: w, public_inputs_hash: &hash };
    let c = Gate::<F, D>::eval_unfiltered(g, vars);
    assert_eq!(c.len(), Gate::<F, D>::num_constraints(g));
    (0..c.len()).filter(|&i| c[i] != FE::ZERO).collect()
}

#[test]
fn rows_hold_as_many_checks_as_the_wires_allow() {
    let got: Vec<(usize, usize)> = [14, 16, 32, 36].map(|b| (b, gate(b).num_ops)).to_vec();
    assert_eq!(got, [(14, 16), (16, 15), (32, 7), (36, 7)]);
    let config = CircuitConfig::standard_recursion_config();
    for bits in WIDTHS {
        let g = gate(bits);
        assert!(g.fits(&config) && Gate::<F, D>::num_wires(&g) <= 135 && g.num_ops <= 80, "{g:?}");
        assert!(!RangeCheckGate::new(bits, g.num_ops + 1).fits(&config), "{g:?} is the most that fits");
    }
}

#[test]
fn constraints_hold_below_the_bound_and_each_tamper_breaks_one() {
    for bits in WIDTHS {
        let g = gate(bits);
        let top = (1u64 << bits) - 1;
        let values: Vec<u64> = (0..g.num_ops as u64).map(|k| [0, 1, top, top / 3][k as usize % 4]).collect();
        assert!(violated(&g, &wires(&g, &values, |_| {})).is_empty(), "{bits} bits: honest");
        let per = g.constraints_per_op();
        let last = g.num_ops - 1;

        // The value off by one from its limbs: the sum constraint.
        let w = wires(&g, &values, |w| w[RangeCheckGate::wire_value(last)] += 1);
        assert_eq!(violated(&g, &w), [last * per], "{bits} bits: value + 1");

        // A limb of 4 (value kept equal to the sum): that limb's constraint only.
        let w = wires(&g, &[0], |w| {
            w[g.wire_limb(0, 0)] = 4;
            w[RangeCheckGate::wire_value(0)] = 4;
        });
        assert_eq!(violated(&g, &w), [1], "{bits} bits: a limb of 4");

        // The bound itself, with a last limb one too big (2 where it is a bit, 4 otherwise): the
        // sum holds, the last limb's constraint does not.
        let limbs = g.limbs();
        let over = if bits % 2 == 1 { 2 } else { 4 };
        let w = wires(&g, &[0], |w| {
            w[g.wire_limb(0, limbs - 1)] = over;
            w[RangeCheckGate::wire_value(0)] = over << (2 * (limbs - 1));
        });
        assert_eq!(over << (2 * (limbs - 1)), 1u64 << bits);
        assert_eq!(violated(&g, &w), [limbs], "{bits} bits: the bound");
    }
}

#[test]
fn evaluations_agree_and_have_the_claimed_degree() {
    for bits in WIDTHS {
        test_low_degree::<F, _, D>(gate(bits));
        test_eval_fns::<F, Config, _, D>(gate(bits)).expect("eval functions agree");
    }
}

/// Nine values of each width in `WIDTHS`, from `values(bits, k)`: the circuit, its witness, and
/// the rows the checks took.
fn circuit(values: impl Fn(usize, usize) -> u64) -> (CircuitData<F, Config, D>, PartialWitness<F>, usize) {
    let mut b = CircuitBuilder::<F, D>::new(CircuitConfig::standard_recursion_config());
    let mut pw = PartialWitness::new();
    let start = b.num_gates();
    for k in 0..9 {
        for bits in WIDTHS {
            let t: Target = b.add_virtual_target();
            range_check(&mut b, t, gate(bits));
            pw.set_target(t, F::from_canonical_u64(values(bits, k))).expect("set");
        }
    }
    let rows = b.num_gates() - start;
    let one = b.one();
    b.register_public_input(one);
    (b.build::<Config>(), pw, rows)
}

#[test]
fn values_below_the_bound_prove_and_share_rows() {
    let (data, pw, rows) = circuit(|bits, k| match k % 3 {
        0 => 0,
        1 => (1 << bits) - 1,
        _ => (0x9e37_79b9_7f4a_7c15u64 >> (64 - bits)) ^ (k as u64 % 2),
    });
    // Interleaved widths still fill their own rows: ⌈9 / ops⌉ rows per width.
    assert_eq!(rows, WIDTHS.iter().map(|&b| 9usize.div_ceil(gate(b).num_ops)).sum::<usize>());
    let proof = prove(&RayonBackend, &data.prover_only, &data.common, pw).expect("in range");
    data.verify(proof).expect("plonky2 verifies it");
}

#[test]
fn a_value_at_the_bound_stops_the_witness_at_a_row_of_the_checks() {
    for (bits, value) in [(32, 1u64 << 32), (16, 1 << 16), (1, 2), (63, 1 << 63), (36, F::ORDER - 1)] {
        let (data, pw, rows) = circuit(|b, k| if b == bits && k == 4 { value } else { 0 });
        match prove(&RayonBackend, &data.prover_only, &data.common, pw) {
            Err(BackendError::Witness(msg)) => {
                assert!(msg.contains("set twice with different values"), "{msg}");
                let row: usize = msg
                    .split("row: ")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .unwrap_or_else(|| panic!("no row in {msg}"));
                assert!(row < rows, "row {row} is not one of the checks' {rows}: {msg}");
            }
            other => panic!("{bits} bits, {value}: expected a witness error, got {:?}", other.map(|_| ())),
        }
    }
}
