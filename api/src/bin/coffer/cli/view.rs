//! What the commands print: plain structs (serialized as they are with
//! `--json`) made from the wire messages, and their tables.
//!
//! Amounts stay the decimal strings the server wrote at the ledger's scale;
//! kinds and flags become their short names (`cash_transfer`); timestamps
//! are nanoseconds in JSON and UTC in tables.

use coffer_api::proto;
use serde::Serialize;

use super::parse::{format_timestamp, short_name_of, short_names_of};
use super::table::Table;

/// A ledger.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerView {
    pub id: u32,
    pub currency: String,
    pub scale: u32,
    pub name: String,
    pub timestamp: u64,
}

impl From<&proto::Ledger> for LedgerView {
    fn from(ledger: &proto::Ledger) -> Self {
        Self {
            id: ledger.id,
            currency: ledger.currency.clone(),
            scale: ledger.scale,
            name: ledger.name.clone(),
            timestamp: ledger.timestamp,
        }
    }
}

/// An account with its balances.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: String,
    pub ledger: u32,
    pub code: u32,
    pub kind: String,
    pub flags: Vec<String>,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    pub user_data_128: String,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: u64,
}

impl From<&proto::Account> for AccountView {
    fn from(account: &proto::Account) -> Self {
        Self {
            id: account.id.clone(),
            ledger: account.ledger,
            code: account.code,
            kind: short_name_of::<proto::AccountKind>(account.kind),
            flags: short_names_of::<proto::AccountFlag>(&account.flags),
            debits_pending: account.debits_pending.clone(),
            debits_posted: account.debits_posted.clone(),
            credits_pending: account.credits_pending.clone(),
            credits_posted: account.credits_posted.clone(),
            user_data_128: account.user_data_128.clone(),
            user_data_64: account.user_data_64,
            user_data_32: account.user_data_32,
            timestamp: account.timestamp,
        }
    }
}

/// A transfer.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    pub id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: String,
    pub pending_id: String,
    pub ledger: u32,
    pub code: u32,
    pub kind: String,
    pub flags: Vec<String>,
    pub timeout: u32,
    pub user_data_128: String,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timestamp: u64,
}

impl From<&proto::Transfer> for TransferView {
    fn from(transfer: &proto::Transfer) -> Self {
        Self {
            id: transfer.id.clone(),
            debit_account_id: transfer.debit_account_id.clone(),
            credit_account_id: transfer.credit_account_id.clone(),
            amount: transfer.amount.clone(),
            pending_id: transfer.pending_id.clone(),
            ledger: transfer.ledger,
            code: transfer.code,
            kind: short_name_of::<proto::TransferKind>(transfer.kind),
            flags: short_names_of::<proto::TransferFlag>(&transfer.flags),
            timeout: transfer.timeout,
            user_data_128: transfer.user_data_128.clone(),
            user_data_64: transfer.user_data_64,
            user_data_32: transfer.user_data_32,
            timestamp: transfer.timestamp,
        }
    }
}

/// An account's balances just after the event at `timestamp`.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceView {
    pub account_id: String,
    pub timestamp: u64,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
}

impl From<&proto::AccountBalance> for BalanceView {
    fn from(balance: &proto::AccountBalance) -> Self {
        Self {
            account_id: balance.account_id.clone(),
            timestamp: balance.timestamp,
            debits_pending: balance.debits_pending.clone(),
            debits_posted: balance.debits_posted.clone(),
            credits_pending: balance.credits_pending.clone(),
            credits_posted: balance.credits_posted.clone(),
        }
    }
}

/// Sums of balances over a set of accounts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TotalsView {
    pub accounts: u64,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
}

impl From<Option<&proto::BalanceTotals>> for TotalsView {
    fn from(totals: Option<&proto::BalanceTotals>) -> Self {
        totals.map_or_else(Self::default, |totals| Self {
            accounts: totals.accounts,
            debits_pending: totals.debits_pending.clone(),
            debits_posted: totals.debits_posted.clone(),
            credits_pending: totals.credits_pending.clone(),
            credits_posted: totals.credits_posted.clone(),
        })
    }
}

/// One code's row of a trial balance.
#[derive(Debug, Clone, Serialize)]
pub struct CodeTotalsView {
    pub code: u32,
    #[serde(flatten)]
    pub totals: TotalsView,
}

/// A ledger's trial balance.
#[derive(Debug, Clone, Serialize)]
pub struct TrialBalanceView {
    pub ledger: u32,
    pub codes: Vec<CodeTotalsView>,
    pub total: TotalsView,
    pub balanced: bool,
    /// The time it stood at (`0`: now).
    pub as_of: u64,
    pub node_id: u64,
    pub applied_index: u64,
}

impl From<&proto::TrialBalanceResponse> for TrialBalanceView {
    fn from(response: &proto::TrialBalanceResponse) -> Self {
        let served = response.served.unwrap_or_default();
        Self {
            ledger: response.ledger,
            codes: response
                .codes
                .iter()
                .map(|code| CodeTotalsView { code: code.code, totals: TotalsView::from(code.totals.as_ref()) })
                .collect(),
            total: TotalsView::from(response.total.as_ref()),
            balanced: response.balanced,
            as_of: response.as_of,
            node_id: served.node_id,
            applied_index: served.applied_index,
        }
    }
}

/// One committed change of the feed.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub cursor: u64,
    pub kind: String,
    pub ledger_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferView>,
    /// A transfer's debit account's balances right after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debit_account_balance: Option<BalanceView>,
    /// Its credit account's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_account_balance: Option<BalanceView>,
    /// Who proposed the batch it came from (empty for an expiry).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub principal: String,
    /// An appropriation charged past its ledger's warning share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_warning: Option<BudgetWarningView>,
}

/// An appropriation charged past its ledger's warning share.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetWarningView {
    pub account_id: String,
    pub share_percent: u32,
    pub warn_percent: u32,
}

impl From<&proto::Change> for ChangeView {
    fn from(change: &proto::Change) -> Self {
        Self {
            cursor: change.cursor,
            kind: short_name_of::<proto::ChangeKind>(change.kind),
            ledger_id: change.ledger_id,
            ledger: change.ledger.as_ref().map(LedgerView::from),
            account: change.account.as_ref().map(AccountView::from),
            transfer: change.transfer.as_ref().map(TransferView::from),
            debit_account_balance: change.debit_account_balance.as_ref().map(BalanceView::from),
            credit_account_balance: change.credit_account_balance.as_ref().map(BalanceView::from),
            principal: change.principal.clone(),
            budget_warning: change.budget_warning.as_ref().map(|warning| BudgetWarningView {
                account_id: warning.account_id.clone(),
                share_percent: warning.share_percent,
                warn_percent: warning.warn_percent,
            }),
        }
    }
}

impl ChangeView {
    /// The change as one line of text.
    pub fn line(&self) -> String {
        let what = if let Some(ledger) = &self.ledger {
            format!("ledger {} {} scale {} {:?}", ledger.id, ledger.currency, ledger.scale, ledger.name)
        } else if let Some(account) = &self.account {
            format!(
                "account {} ledger {} code {} {}{}",
                account.id,
                account.ledger,
                account.code,
                account.kind,
                flag_suffix(&account.flags)
            )
        } else if let Some(transfer) = &self.transfer {
            let pending = match transfer.pending_id.as_str() {
                "" | "0" => String::new(),
                id => format!(" pending {id}"),
            };
            format!(
                "transfer {} ledger {} debit {} credit {} amount {} {} code {}{pending}{}",
                transfer.id,
                transfer.ledger,
                transfer.debit_account_id,
                transfer.credit_account_id,
                transfer.amount,
                transfer.kind,
                transfer.code,
                flag_suffix(&transfer.flags)
            )
        } else {
            format!("ledger {}", self.ledger_id)
        };
        let by = match self.principal.as_str() {
            "" => String::new(),
            principal => format!(" by {principal}"),
        };
        let warning = match &self.budget_warning {
            None => String::new(),
            Some(warning) => format!(
                " WARNING budget account {} at {}% (warns at {}%)",
                warning.account_id, warning.share_percent, warning.warn_percent
            ),
        };
        format!("{} {} {} {what}{by}{warning}", self.cursor, format_timestamp(self.cursor), self.kind)
    }
}

fn flag_suffix(flags: &[String]) -> String {
    if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(","))
    }
}

/// One node's state.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node_id: u64,
    pub address: String,
    pub role: Option<String>,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub lag: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub error: Option<String>,
    pub plaintext: bool,
}

/// The result of one event of a create request.
#[derive(Debug, Clone, Serialize)]
pub struct EventResult {
    pub index: usize,
    pub id: String,
    pub result: String,
}

/// A count and its noun: `1 transfer`, `3 transfers`.
pub fn counted(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// A create request's results with where it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub node_id: u64,
    pub applied_index: u64,
    pub results: Vec<EventResult>,
    pub created: usize,
    pub exists: usize,
    pub failed: usize,
}

impl CreateReport {
    /// The report of results (one per id, in order).
    pub fn new(served: Option<proto::Served>, ids: &[String], results: &[String]) -> Self {
        let served = served.unwrap_or_default();
        let results = ids
            .iter()
            .zip(results)
            .enumerate()
            .map(|(index, (id, result))| EventResult { index, id: id.clone(), result: result.clone() })
            .collect::<Vec<_>>();
        let count = |name: &str| results.iter().filter(|event| event.result == name).count();
        let (created, exists) = (count("created"), count("exists"));
        let failed = results.len() - created - exists;
        Self { node_id: served.node_id, applied_index: served.applied_index, results, created, exists, failed }
    }

    /// The results as a table and a summary line naming `what` was created
    /// (a plural ending in `s`: `transfers`).
    pub fn text(&self, what: &str) -> String {
        let mut table = Table::new(&["INDEX", "ID", "RESULT"]);
        for event in &self.results {
            table.row(vec![event.index.to_string(), event.id.clone(), event.result.clone()]);
        }
        format!(
            "{}{}: {} created, {} exists, {} failed (node {}, log index {})\n",
            table.render(),
            counted(self.results.len(), what.strip_suffix('s').unwrap_or(what), what),
            self.created,
            self.exists,
            self.failed,
            self.node_id,
            self.applied_index
        )
    }
}

/// Transfers as a table.
pub fn transfers_table(transfers: &[TransferView]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "TIME",
        "DEBIT",
        "CREDIT",
        "AMOUNT",
        "LEDGER",
        "CODE",
        "KIND",
        "FLAGS",
        "PENDING_ID",
        "TIMEOUT",
        "UD128",
        "UD64",
        "UD32",
    ])
    .optional(&["PENDING_ID", "TIMEOUT", "UD128", "UD64", "UD32"]);
    for transfer in transfers {
        table.row(vec![
            transfer.id.clone(),
            format_timestamp(transfer.timestamp),
            transfer.debit_account_id.clone(),
            transfer.credit_account_id.clone(),
            transfer.amount.clone(),
            transfer.ledger.to_string(),
            transfer.code.to_string(),
            transfer.kind.clone(),
            transfer.flags.join(","),
            transfer.pending_id.clone(),
            transfer.timeout.to_string(),
            transfer.user_data_128.clone(),
            transfer.user_data_64.to_string(),
            transfer.user_data_32.to_string(),
        ]);
    }
    table
}

/// Accounts as a table.
pub fn accounts_table(accounts: &[AccountView]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "LEDGER",
        "CODE",
        "KIND",
        "FLAGS",
        "DEBITS_PENDING",
        "DEBITS_POSTED",
        "CREDITS_PENDING",
        "CREDITS_POSTED",
        "UD128",
        "UD64",
        "UD32",
        "CREATED",
    ])
    .optional(&["UD128", "UD64", "UD32"]);
    for account in accounts {
        table.row(vec![
            account.id.clone(),
            account.ledger.to_string(),
            account.code.to_string(),
            account.kind.clone(),
            account.flags.join(","),
            account.debits_pending.clone(),
            account.debits_posted.clone(),
            account.credits_pending.clone(),
            account.credits_posted.clone(),
            account.user_data_128.clone(),
            account.user_data_64.to_string(),
            account.user_data_32.to_string(),
            format_timestamp(account.timestamp),
        ]);
    }
    table
}

/// Balances as a table.
pub fn balances_table(balances: &[BalanceView]) -> Table {
    let mut table = Table::new(&[
        "ACCOUNT",
        "TIME",
        "TIMESTAMP",
        "DEBITS_PENDING",
        "DEBITS_POSTED",
        "CREDITS_PENDING",
        "CREDITS_POSTED",
    ]);
    for balance in balances {
        table.row(vec![
            balance.account_id.clone(),
            format_timestamp(balance.timestamp),
            balance.timestamp.to_string(),
            balance.debits_pending.clone(),
            balance.debits_posted.clone(),
            balance.credits_pending.clone(),
            balance.credits_posted.clone(),
        ]);
    }
    table
}

/// A trial balance as a table (one row per code, then the total) and its verdict.
pub fn trial_balance_text(trial: &TrialBalanceView) -> String {
    let mut table =
        Table::new(&["CODE", "ACCOUNTS", "DEBITS_PENDING", "DEBITS_POSTED", "CREDITS_PENDING", "CREDITS_POSTED"]);
    let cells = |code: String, totals: &TotalsView| {
        vec![
            code,
            totals.accounts.to_string(),
            totals.debits_pending.clone(),
            totals.debits_posted.clone(),
            totals.credits_pending.clone(),
            totals.credits_posted.clone(),
        ]
    };
    for code in &trial.codes {
        table.row(cells(code.code.to_string(), &code.totals));
    }
    table.row(cells("TOTAL".into(), &trial.total));
    let verdict = if trial.balanced { "BALANCED" } else { "NOT BALANCED" };
    let as_of = match trial.as_of {
        0 => String::new(),
        at => format!(" as of {}", super::parse::format_timestamp(at)),
    };
    format!(
        "ledger {}{as_of} (node {}, applied index {})\n{}{verdict}\n",
        trial.ledger,
        trial.node_id,
        trial.applied_index,
        table.render()
    )
}

/// Nodes as a table.
pub fn nodes_table(nodes: &[NodeView]) -> Table {
    let mut table = Table::new(&[
        "NODE", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "VOTERS", "LEARNERS", "TLS", "ERROR",
    ]);
    let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    for node in nodes {
        table.row(vec![
            node.node_id.to_string(),
            node.address.clone(),
            node.role.clone().unwrap_or_else(|| "-".into()),
            node.term.to_string(),
            node.leader_id.to_string(),
            node.commit_index.to_string(),
            node.applied_index.to_string(),
            node.lag.to_string(),
            list(&node.voters),
            list(&node.learners),
            match (&node.error, node.plaintext) {
                (Some(_), _) => "-".into(),
                (None, false) => "on".into(),
                (None, true) => "OFF (insecure)".into(),
            },
            node.error.clone().unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_report_counts_successes_and_failures() {
        let ids = ["1".to_owned(), "2".to_owned(), "3".to_owned()];
        let results = ["created".to_owned(), "exists".to_owned(), "exceeds_credits".to_owned()];
        let served = proto::Served { node_id: 2, applied_index: 40, stale: false };
        let report = CreateReport::new(Some(served), &ids, &results);
        assert_eq!((report.created, report.exists, report.failed), (1, 1, 1));
        let text = report.text("transfers");
        assert!(text.contains("    2   3  exceeds_credits\n"), "{text}");
        assert!(text.ends_with("3 transfers: 1 created, 1 exists, 1 failed (node 2, log index 40)\n"), "{text}");
        let one = CreateReport::new(Some(served), &ids[..1], &results[..1]).text("ledgers");
        assert!(one.ends_with("1 ledger: 1 created, 0 exists, 0 failed (node 2, log index 40)\n"), "{one}");
    }

    #[test]
    fn a_transfer_change_is_one_line() {
        let change = proto::Change {
            cursor: 1_000_000_001,
            kind: proto::ChangeKind::TransferCreated as i32,
            ledger_id: 1,
            transfer: Some(proto::Transfer {
                id: "9".into(),
                debit_account_id: "10".into(),
                credit_account_id: "11".into(),
                amount: "1500000".into(),
                ledger: 1,
                code: 7,
                kind: proto::TransferKind::Expenditure as i32,
                flags: vec![proto::TransferFlag::Pending as i32],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            ChangeView::from(&change).line(),
            "1000000001 1970-01-01T00:00:01.000000001Z transfer_created \
             transfer 9 ledger 1 debit 10 credit 11 amount 1500000 expenditure code 7 [pending]"
        );
    }
}
