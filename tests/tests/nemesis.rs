//! The real-process nemesis, short: a bank workload against three `coffer
//! node` processes while at least 20 faults of every kind (SIGKILL,
//! SIGSTOP, partitions, one-way cuts, corrupted table files) hit them; the
//! history and every replica are then checked (see
//! `coffer_tests::nemesis`). The long run is `make nemesis FAULTS=300`
//! (`COFFER_NEMESIS_FAULTS`, `COFFER_NEMESIS_SEED`).

use coffer_tests::nemesis::faults::FaultKind;
use coffer_tests::nemesis::{run, NemesisOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_finds_no_lost_duplicated_unbalanced_or_stale_transfer_under_faults() {
    let options = NemesisOptions::from_env();
    let report = run(options).await;
    println!("{report}");
    for kind in FaultKind::ALL {
        assert!(
            report.faults.len() < FaultKind::ALL.len() || report.faults.iter().any(|fault| fault.kind == kind),
            "no {} fault was injected",
            kind.name()
        );
    }
    assert!(report.transfers_acked > 0, "the workload made progress");
    assert!(
        report.violations.is_empty(),
        "{} violations (seed {}):\n{report}",
        report.violations.len(),
        report.options.seed
    );
}
