//! Recursive aggregation of batch proofs into block proofs; filled by the aggregation issue.
