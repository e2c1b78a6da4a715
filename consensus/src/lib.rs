//! `coffer-consensus` will own the Raft node around `raft::RawNode`: a sans-IO
//! core stepped with messages, ticks and proposals, the Ready loop, group
//! commit of proposals, the peer transport, linearizable reads (ReadIndex),
//! membership changes and snapshots.
//!
//! Nothing is built here yet: see issue 4 and `ARCHITECTURE.md`.
