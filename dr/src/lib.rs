//! `coffer-dr` will own disaster recovery: shipping committed entries from the
//! primary region to one remote replica set, lag tracking, region epochs and
//! write-lease fencing, switchover, failover, failback and drills.
//!
//! Nothing is built here yet: see issue 8 and `ARCHITECTURE.md`.
