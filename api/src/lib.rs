//! `coffer-api` will own the gRPC surface (`coffer.v1` protos, tonic
//! services), the Rust client and the `coffer` binary (node, dev cluster, CLI,
//! bench and drill subcommands). It stays thin: decode, validate shape, hand
//! to consensus, encode the answer.
//!
//! Nothing is built here yet: see issue 5 and `ARCHITECTURE.md`.
