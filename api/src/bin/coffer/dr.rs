//! `coffer dr`: disaster-recovery operations across the two regions. The
//! operations are `coffer_api::disaster`'s; this module parses their
//! arguments and prints their reports (a table or text, or `--json`).

use coffer_api::disaster::{
    DrError, DrillArgs, DrillReport, FailbackArgs, FailoverArgs, LeaseArgs, LostTransfer, Operator, ReconcileReport,
    ReseedArgs, StatusRow, SwitchoverArgs, Timeline, UnfreezeArgs,
};
use coffer_consensus::RegionRole;
use coffer_dr::role_from_name;
use serde::Serialize;

use crate::cli::table::Table;
use crate::cli::ClientOptions;

/// `coffer dr ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DrCommand {
    /// Both regions' role, epoch, lag, write lease and shipping.
    Status,
    /// Planned move of the primary role to the standby region (RPO 0).
    Switchover(SwitchoverArgs),
    /// Promote the standby region after the primary region was lost.
    Failover(FailoverArgs),
    /// The old primary rejoins as standby, then takes the primary role back.
    Failback(FailbackArgs),
    /// Run a switchover or a failover (and failback) drill and judge it.
    Drill(DrillArgs),
    /// The transfers the old primary committed that the new primary does not
    /// hold (after a failover), for reconciliation.
    Reconcile,
    /// Rebuild the standby region from a checkpoint of the primary (when it
    /// fell behind what the primary's log still holds).
    Reseed(ReseedArgs),
    /// Let the primary write without its standby's lease (the standby region
    /// is lost), or require the lease again.
    Lease(LeaseArgs),
    /// Give a frozen primary its writes back (after a switchover that could
    /// neither finish nor undo its freeze).
    Unfreeze(UnfreezeArgs),
}

fn status_table(rows: &[StatusRow]) -> String {
    let mut table = Table::new(&[
        "REGION", "NODE", "ADDRESS", "LEADER", "ROLE", "EPOCH", "APPLIED", "CURSOR", "LAG", "LAG_MS", "LEASE_MS",
        "NOTES",
    ]);
    for row in rows {
        let mut notes = Vec::new();
        if row.frozen {
            notes.push("frozen".to_owned());
        }
        let role = role_from_name(&row.role);
        if row.leader && role == Some(RegionRole::Primary) {
            notes.push(format!("{} {}", row.mode, row.fencing));
            notes.push(if row.standby_connected { "standby connected".into() } else { "no standby connected".into() });
        }
        if row.leader && role == Some(RegionRole::Standby) {
            notes.push(if row.shipping { "shipping".into() } else { "not shipping".into() });
            if row.promote_wait_ms > 0 {
                notes.push(format!("promotable in {} ms", row.promote_wait_ms));
            }
        }
        if !row.error.is_empty() {
            notes.push(row.error.clone());
        }
        let lease = if row.leader && role == Some(RegionRole::Primary) {
            row.lease_remaining_ms.to_string()
        } else {
            "-".into()
        };
        let answered = row.node_id.is_some();
        let figure = |value: u64| if answered { value.to_string() } else { "-".into() };
        table.row(vec![
            row.region.clone(),
            row.node_id.map_or_else(|| "?".to_owned(), |id| id.to_string()),
            row.address.clone(),
            if row.leader { "yes".into() } else { String::new() },
            row.role.clone(),
            figure(row.epoch),
            figure(row.applied_index),
            row.cursor.map_or_else(|| "-".to_owned(), |cursor| cursor.to_string()),
            figure(row.lag_entries),
            figure(row.lag_ms),
            lease,
            notes.join("; "),
        ]);
    }
    table.render()
}

/// `coffer dr reconcile`'s report as text: a header, then one line per
/// transfer to reconcile, or a header saying there is none.
fn reconcile_text(report: &ReconcileReport) -> String {
    let (old, primary, base) = (&report.old_region, &report.primary_region, report.base_timestamp);
    if report.transfers.is_empty() {
        return format!(
            "{old} committed no transfers past the state {primary} was promoted with (timestamp {base}): \
             nothing to reconcile\n"
        );
    }
    let count = report.transfers.len();
    let mut text =
        format!("{old} committed {count} transfers past the state {primary} was promoted with (timestamp {base}):\n");
    for lost in &report.transfers {
        text.push_str(&lost_line(lost));
    }
    text
}

fn drill_text(report: &DrillReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("DR drill: {}{}\n", report.scenario, if report.failback { " + failback" } else { "" }));
    out.push_str("timeline:\n");
    for event in &report.timeline {
        out.push_str(&format!("  {:>7} ms  {}\n", event.at_ms, event.event));
    }
    let bound = match report.rpo_bound_ms {
        _ if report.sync => "sync mode: none may be lost".to_owned(),
        0 => "no bound".to_owned(),
        bound => format!("bound {bound} ms"),
    };
    out.push_str(&format!(
        "RPO: {} acknowledged transfers lost, acknowledged over {} ms ({bound}); {} of them listed for \
         reconciliation; index gap {}\n",
        report.rpo_lost_acknowledged, report.rpo_lost_ms, report.rpo_lost_listed, report.rpo_index_gap
    ));
    out.push_str(&format!(
        "RTO: {} ms without an acknowledged write ({} acknowledged, {} batches refused)\n",
        report.rto_ms, report.acknowledged, report.refused_batches
    ));
    if let Some(switched) = &report.switchover {
        out.push_str(&format!("switchover write pause: {} ms\n", switched.write_pause_ms));
    }
    out.push_str(&format!(
        "digests at index {}: primary {} standby {} ({})\n",
        report.at_index,
        report.primary_digest,
        report.standby_digest,
        if report.digests_equal { "equal" } else { "DIFFERENT" }
    ));
    for reason in &report.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    out.push_str(&format!("{}\n", report.verdict));
    out
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> Result<(), DrError> {
    if json {
        let text = serde_json::to_string_pretty(value).map_err(|error| DrError::Output(error.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", text(value));
    }
    Ok(())
}

/// One indented line naming a lost transfer's sides.
fn lost_line(lost: &LostTransfer) -> String {
    format!(
        "  {} debit {} credit {} amount {} ledger {}\n",
        lost.id, lost.debit_account_id, lost.credit_account_id, lost.amount, lost.ledger
    )
}

/// Runs a `coffer dr` command.
pub async fn run(command: DrCommand, options: &ClientOptions) -> Result<(), DrError> {
    let addresses = &options.addresses;
    let operator = Operator::new(crate::cli::security());
    // The text form prints each step as it happens (stderr); JSON carries
    // them in the report.
    let mut timeline = if options.json {
        Timeline::new()
    } else {
        Timeline::observed(|event| eprintln!("  {:>7} ms  {}", event.at_ms, event.event))
    };
    match command {
        DrCommand::Status => {
            let rows = operator.status(addresses).await?;
            print(options.json, &rows, |rows| status_table(rows))
        }
        DrCommand::Switchover(args) => {
            let mut report = operator.switchover(addresses, &args, &mut timeline).await?;
            report.timeline = timeline.events().to_vec();
            print(options.json, &report, |report| {
                format!(
                    "switchover done: {} is the primary of epoch {} (write pause {} ms, digest {})\n",
                    report.to_region, report.epoch, report.write_pause_ms, report.digest
                )
            })
        }
        DrCommand::Failover(args) => {
            let mut report = operator.failover(addresses, &args, &mut timeline).await?;
            report.timeline = timeline.events().to_vec();
            print(options.json, &report, |report| {
                let mut text = format!(
                    "failover done: {} is the primary of epoch {} at index {}; it applied the old primary's log to \
                     index {} (last heard at {}: index gap {})\n",
                    report.promoted_region,
                    report.epoch,
                    report.promoted_index,
                    report.cursor,
                    report.primary_last_heard_index,
                    report.index_gap
                );
                match &report.divergent_transfers {
                    None => text.push_str(&format!(
                        "{} does not answer: list what it committed past the cursor once it does (`coffer dr \
                         failback` does)\n",
                        report.lost_region
                    )),
                    Some(list) => {
                        text.push_str(&format!(
                            "{} committed {} transfers past the cursor:\n",
                            report.lost_region,
                            list.len()
                        ));
                        for lost in list {
                            text.push_str(&lost_line(lost));
                        }
                    }
                }
                text
            })
        }
        DrCommand::Reconcile => {
            let report = operator.reconcile(addresses).await?;
            print(options.json, &report, reconcile_text)
        }
        DrCommand::Lease(args) => {
            let report = operator.lease(addresses, &args).await?;
            print(options.json, &report, |report| {
                format!(
                    "{} (epoch {}) {} at index {}\n",
                    report.region,
                    report.epoch,
                    if report.lease_required {
                        "writes only under its standby's lease again"
                    } else {
                        "writes without a lease"
                    },
                    report.index
                )
            })
        }
        DrCommand::Unfreeze(args) => {
            let report = operator.unfreeze_primary(addresses, &args).await?;
            print(options.json, &report, |report| {
                if report.was_frozen {
                    format!("{} (epoch {}) takes writes again\n", report.region, report.epoch)
                } else {
                    format!("{} (epoch {}) is not frozen: nothing changed\n", report.region, report.epoch)
                }
            })
        }
        DrCommand::Reseed(args) => {
            let report = operator.reseed(addresses, &args, &mut timeline).await?;
            let events = timeline.events().to_vec();
            print(options.json, &events, |_| {
                format!(
                    "re-seed done: {} follows {1} from {1}'s index {2}\n",
                    report.standby_region, report.primary_region, report.index
                )
            })
        }
        DrCommand::Failback(args) => {
            let mut report = operator.failback(addresses, &args, &mut timeline).await?;
            report.timeline = timeline.events().to_vec();
            print(options.json, &report, |report| {
                format!(
                    "failback done: {} is the primary of epoch {}, {} its standby\n",
                    report.primary_region, report.epoch, report.rejoined_region
                )
            })
        }
        DrCommand::Drill(args) => {
            // A drill prints its timeline in its report, not as it goes.
            let mut timeline = Timeline::new();
            let mut report = operator.drill(addresses, &args, &mut timeline).await?;
            report.timeline = timeline.events().to_vec();
            print(options.json, &report, drill_text)?;
            if report.verdict == "PASS" {
                Ok(())
            } else {
                Err(DrError::Verdict(report.reasons.join("; ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(transfers: Vec<LostTransfer>) -> ReconcileReport {
        ReconcileReport { primary_region: "busan".into(), old_region: "seoul".into(), base_timestamp: 7, transfers }
    }

    #[test]
    fn reconcile_with_nothing_to_list_says_so() {
        let text = reconcile_text(&report(Vec::new()));
        assert_eq!(
            text,
            "seoul committed no transfers past the state busan was promoted with (timestamp 7): nothing to reconcile\n"
        );
    }

    #[test]
    fn reconcile_names_each_transfers_debit_and_credit() {
        let lost = LostTransfer {
            id: "9".into(),
            debit_account_id: "1001".into(),
            credit_account_id: "1401".into(),
            amount: "500".into(),
            ledger: 1,
            timestamp: 8,
        };
        let text = reconcile_text(&report(vec![lost]));
        assert!(text.ends_with(":\n  9 debit 1001 credit 1401 amount 500 ledger 1\n"), "{text}");
    }

    #[test]
    fn scenarios_print_as_their_command_line_names() {
        use coffer_api::disaster::Scenario;
        assert_eq!(format!("drill {}", Scenario::Switchover), "drill switchover");
        assert_eq!(Scenario::Failover.to_string(), "failover");
    }
}
