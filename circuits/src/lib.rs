//! The rollup's state model, transactions, native executor and plonky2 batch circuit.
//!
//! The executor is the oracle: every batch it accepts, the circuit proves with the same roots
//! and commitment, and every rule it enforces, the circuit enforces too.

pub mod bls;
pub mod circuit;
pub mod codec;
pub mod deferred;
pub mod error;
pub mod executor;
pub mod genesis;
pub mod hash;
pub mod load;
pub mod smt;
pub mod state;
pub mod store;
pub mod swap;
pub mod tx;
pub mod witness;

pub use circuit::{
    check_capacity, BatchCircuit, BatchPublicInputs, CircuitStats, Config, Padding, Proof, D, MAX_BATCH_CAPACITY,
    MAX_BATCH_DEGREE_BITS,
};
pub use error::{CircuitError, DecodeError, TxError};
pub use executor::{Executor, Receipt};
pub use genesis::Genesis;
pub use hash::{Digest, F};
pub use state::{AccountRecord, Pool, State};
pub use store::{MemoryStore, NodeStore, Nodes, SharedNodes, StateStore};
pub use tx::{Direction, Register, Swap, Transfer, Tx};
pub use witness::BatchWitness;
