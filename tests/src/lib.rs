//! `coffer-tests` will own the end-to-end tests that start real `coffer`
//! processes on loopback and drive them through the public API.
//!
//! Nothing is built here yet: see issue 5 and `ARCHITECTURE.md`.
