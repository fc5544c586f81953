//! The Fiat–Shamir transcript: plonky2 1.1's `Challenger` over Poseidon, rebuilt so that its
//! sponge state can be read.
//!
//! plonky2 keeps the challenger's state crate-private, and its FRI proof of work reads it: the
//! search for the witness permutes the state with each candidate written into the next input
//! slot. To run that search on a backend (a device tries a million candidates at once) the
//! prover needs the state, so it keeps its own transcript. The duplex is plonky2's, operation for
//! operation (tests compare every challenge with plonky2's `Challenger` on random sequences of
//! observations and draws), so proofs are unchanged and plonky2's verifier replays them.

use plonky2::field::extension::{Extendable, FieldExtension};
use plonky2::field::types::Field;
use plonky2::fri::FriParams;
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::hashing::PlonkyPermutation;
use plonky2::hash::merkle_tree::MerkleCap;
use plonky2::hash::poseidon::{PoseidonHash, PoseidonPermutation};

use crate::F;

const D: usize = 2;
type FE = <F as Extendable<D>>::Extension;

/// Width of the Poseidon state.
pub const WIDTH: usize = 12;
/// Elements absorbed (and squeezed) per permutation.
pub const RATE: usize = 8;

/// A duplex sponge over Poseidon, absorbing and squeezing as plonky2's `Challenger` does.
#[derive(Clone, Debug)]
pub struct Transcript {
    state: PoseidonPermutation<F>,
    input: Vec<F>,
    output: Vec<F>,
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

impl Transcript {
    /// The empty transcript: a zero state.
    pub fn new() -> Self {
        Transcript {
            state: PoseidonPermutation::new(std::iter::repeat(F::ZERO)),
            input: Vec::with_capacity(RATE),
            output: Vec::with_capacity(RATE),
        }
    }

    /// Absorbs one element; a full rate of them is permuted in.
    pub fn observe_element(&mut self, e: F) {
        self.output.clear();
        self.input.push(e);
        if self.input.len() == RATE {
            self.duplex();
        }
    }

    /// Absorbs `elements` in order.
    pub fn observe_elements(&mut self, elements: &[F]) {
        elements.iter().for_each(|&e| self.observe_element(e));
    }

    /// Absorbs extension elements, each as its base-field components.
    pub fn observe_extension_elements(&mut self, elements: &[FE]) {
        for e in elements {
            self.observe_elements(&FieldExtension::<D>::to_basefield_array(e));
        }
    }

    /// Absorbs a digest.
    pub fn observe_hash(&mut self, h: HashOut<F>) {
        self.observe_elements(&h.elements);
    }

    /// Absorbs a Merkle cap, digest by digest.
    pub fn observe_cap(&mut self, cap: &MerkleCap<F, PoseidonHash>) {
        cap.0.iter().for_each(|h| self.observe_hash(*h));
    }

    /// Absorbs FRI's parameters as plonky2's `FriParams::observe` does.
    pub fn observe_fri_params(&mut self, p: &FriParams) {
        let c = &p.config;
        self.observe_element(F::from_canonical_usize(c.rate_bits));
        self.observe_element(F::from_canonical_usize(c.cap_height));
        self.observe_element(F::from_canonical_u32(c.proof_of_work_bits));
        self.observe_elements(&c.reduction_strategy.serialize::<F>());
        self.observe_element(F::from_canonical_usize(c.num_query_rounds));
        self.observe_element(F::from_bool(p.hiding));
        self.observe_element(F::from_canonical_usize(p.degree_bits));
        for &a in &p.reduction_arity_bits {
            self.observe_element(F::from_canonical_usize(a));
        }
    }

    /// One challenge: pending inputs (or an empty output) force a permutation first; outputs
    /// are drawn from the end of the rate.
    pub fn get_challenge(&mut self) -> F {
        if !self.input.is_empty() || self.output.is_empty() {
            self.duplex();
        }
        self.output.pop().expect("a permutation fills the output")
    }

    /// `n` challenges.
    pub fn get_n_challenges(&mut self, n: usize) -> Vec<F> {
        (0..n).map(|_| self.get_challenge()).collect()
    }

    /// An extension-field challenge from two consecutive challenges.
    pub fn get_extension_challenge(&mut self) -> FE {
        let [a, b] = [self.get_challenge(), self.get_challenge()];
        FE::from_basefield_array([a, b])
    }

    /// The proof of work's starting point: the state with the pending inputs written in, and
    /// the slot the witness goes to. Observing a witness `w` and drawing one challenge gives
    /// element `RATE − 1` of that state, `w` written at the slot, permuted.
    pub fn pow_state(&self) -> ([F; WIDTH], usize) {
        let mut s = self.state;
        s.set_from_slice(&self.input, 0);
        let mut out = [F::ZERO; WIDTH];
        out.copy_from_slice(s.as_ref());
        (out, self.input.len())
    }

    fn duplex(&mut self) {
        self.state.set_from_slice(&self.input, 0);
        self.input.clear();
        self.state.permute();
        self.output.clear();
        self.output.extend_from_slice(self.state.squeeze());
    }
}

/// Element `RATE − 1` after permuting `state` with `candidate` at `slot`: the challenge the
/// transcript draws after observing the candidate.
pub fn pow_response(state: &[F; WIDTH], slot: usize, candidate: u64) -> F {
    let mut s = PoseidonPermutation::new(state.iter().copied());
    s.set_elt(F::from_canonical_u64(candidate), slot);
    s.permute();
    s.squeeze()[RATE - 1]
}
