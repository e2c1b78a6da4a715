//! `coffer-benches` owns Coffer's measurements: the criterion
//! micro-benchmarks (`benches/`) and, later, the year-end-peak load
//! generator. This library holds the workload builders the benchmarks share.
