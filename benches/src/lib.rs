//! Shared pieces of the benchmarks.

pub use circuits::load::mixed_load;
