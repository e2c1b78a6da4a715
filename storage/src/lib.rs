//! `coffer-storage` will own everything Coffer keeps on disk, in one RocksDB
//! instance per node: the Raft log and hard state (implementing
//! `raft::Storage`), the ledger state (implementing `coffer_ledger::Store`),
//! snapshots, log compaction, and crc32 checksums verified on every read.
//!
//! Nothing is built here yet: see issue 3 and `ARCHITECTURE.md`.
