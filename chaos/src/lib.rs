//! `coffer-chaos` will own fault injection and checking: the deterministic
//! cluster simulator, the real-process nemesis (kill, pause, partition, disk
//! corruption), the bank-style workload and its checkers.
//!
//! Nothing is built here yet: see issue 7 and `ARCHITECTURE.md`.
