//! gRPC definitions of the rollup services; filled by the services issue.
