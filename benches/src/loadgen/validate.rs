//! Validation after the run, against the generator's own record:
//!
//! 1. every transfer answered with anything but `created`/`exists` is a
//!    failure (no generated transfer can be refused: no account has a limit);
//! 2. a uniform sample of acknowledged transfers is looked up and compared
//!    field by field (the timestamp must be set);
//! 3. every account of the run is looked up (in batches of 8,189) and its
//!    four balances, ledger, code and kind compared with the ones
//!    recomputed from the acknowledged transfers;
//! 4. each ledger's trial balance is balanced (debits = credits, posted and
//!    pending) and, on a cluster the run started itself, its totals equal
//!    the recomputed ones (on an existing cluster other clients may post to
//!    the same ledgers).
//!
//! Reads are linearizable (confirmed with the leader), so they see every
//! acknowledged write.

use coffer_api::client::Client;
use coffer_ledger::invariants::limit_breach;
use coffer_ledger::{Account, BalanceTotals, Transfer, BATCH_EVENTS_MAX};

use super::error::BenchError;
use super::expected::{Balances, Expected};
use super::workload::Layout;

/// Problems listed in the report (all are counted).
pub const PROBLEMS_LISTED_MAX: usize = 20;

/// One ledger's trial balance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LedgerCheck {
    /// The ledger.
    pub ledger: u32,
    /// Accounts in the ledger.
    pub accounts: u64,
    /// Σ debits posted (decimal string: it is a `u128`).
    pub debits_posted: String,
    /// Σ credits posted.
    pub credits_posted: String,
    /// Σ debits pending.
    pub debits_pending: String,
    /// Σ credits pending.
    pub credits_pending: String,
    /// Debits equal credits, posted and pending.
    pub balanced: bool,
    /// The totals equal the generator's (`None`: not checked, an existing cluster).
    pub matches_expected: Option<bool>,
}

/// What validation found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Validation {
    /// Whether the run validated.
    pub ok: bool,
    /// Transfers answered with a failure during the run.
    pub failed_transfers: u64,
    /// Transfers looked up.
    pub transfers_sampled: usize,
    /// Of those, missing or different.
    pub transfers_mismatched: usize,
    /// Accounts looked up.
    pub accounts_checked: usize,
    /// Of those, missing or different.
    pub accounts_mismatched: usize,
    /// Each ledger's trial balance.
    pub ledgers: Vec<LedgerCheck>,
    /// Every problem found, counted.
    pub problems_found: usize,
    /// The first problems, described.
    pub problems: Vec<String>,
}

impl Validation {
    fn problem(&mut self, problem: String) {
        self.problems_found += 1;
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(problem);
        }
    }
}

/// Checks the cluster against `expected` (see the module docs);
/// `exact_totals`: the run's accounts are the ledgers' only accounts.
pub async fn validate(
    client: &Client,
    layout: &Layout,
    expected: &Expected,
    exact_totals: bool,
) -> Result<Validation, BenchError> {
    let mut validation = Validation { failed_transfers: expected.failed(), ..Validation::default() };
    for example in expected.failure_examples() {
        validation.problem(format!("answered during the run: {example}"));
    }
    validation.problems_found += (expected.failed() as usize).saturating_sub(expected.failure_examples().len());
    check_transfers(client, expected.sample(), &mut validation).await?;
    check_accounts(client, layout, expected, &mut validation).await?;
    check_trial_balances(client, layout, expected, exact_totals, &mut validation).await?;
    validation.ok = validation.problems_found == 0;
    Ok(validation)
}

async fn check_transfers(client: &Client, sample: &[Transfer], validation: &mut Validation) -> Result<(), BenchError> {
    for chunk in sample.chunks(BATCH_EVENTS_MAX) {
        let ids: Vec<_> = chunk.iter().map(|transfer| transfer.id).collect();
        let found = client.lookup_transfers(&ids).await.map_err(BenchError::client("looking up sampled transfers"))?;
        for (sent, stored) in chunk.iter().zip(&found.value) {
            validation.transfers_sampled += 1;
            if let Some(problem) = compare_transfer(sent, stored.as_ref()) {
                validation.transfers_mismatched += 1;
                validation.problem(problem);
            }
        }
    }
    Ok(())
}

/// Why the stored transfer is not the one acknowledged, if it is not.
pub fn compare_transfer(sent: &Transfer, stored: Option<&Transfer>) -> Option<String> {
    let Some(stored) = stored else {
        return Some(format!("transfer {} was acknowledged but is not found", sent.id));
    };
    if stored.timestamp == 0 {
        return Some(format!("transfer {} has no timestamp", sent.id));
    }
    let stored_untimed = Transfer { timestamp: 0, ..*stored };
    (stored_untimed != *sent).then(|| format!("transfer {}: sent {sent:?}, stored {stored:?}", sent.id))
}

async fn check_accounts(
    client: &Client,
    layout: &Layout,
    expected: &Expected,
    validation: &mut Validation,
) -> Result<(), BenchError> {
    let positions: Vec<usize> = (0..layout.account_count()).collect();
    for chunk in positions.chunks(BATCH_EVENTS_MAX) {
        let ids: Vec<_> = chunk.iter().map(|&position| layout.account(position).id).collect();
        let found = client.lookup_accounts(&ids).await.map_err(BenchError::client("looking up accounts"))?;
        for (&position, stored) in chunk.iter().zip(&found.value) {
            validation.accounts_checked += 1;
            let created = layout.account(position);
            if let Some(problem) = compare_account(&created, expected.balances(position), stored.as_ref()) {
                validation.accounts_mismatched += 1;
                validation.problem(problem);
            }
        }
    }
    Ok(())
}

/// Why the stored account is not the one created with the expected balances.
pub fn compare_account(created: &Account, expected: Balances, stored: Option<&Account>) -> Option<String> {
    let Some(stored) = stored else {
        return Some(format!("account {} is not found", created.id));
    };
    let shape = (stored.ledger, stored.code, stored.kind, stored.flags);
    if shape != (created.ledger, created.code, created.kind, created.flags) {
        return Some(format!("account {}: created {created:?}, stored {stored:?}", created.id));
    }
    if let Some(breach) = limit_breach(stored) {
        return Some(breach);
    }
    let balances = Balances::of(stored);
    (balances != expected).then(|| format!("account {}: expected {expected:?}, stored {balances:?}", created.id))
}

async fn check_trial_balances(
    client: &Client,
    layout: &Layout,
    expected: &Expected,
    exact_totals: bool,
    validation: &mut Validation,
) -> Result<(), BenchError> {
    for ledger_index in 0..layout.ledgers {
        let ledger = Layout::ledger_id(ledger_index);
        let trial = client
            .trial_balance(ledger)
            .await
            .map_err(BenchError::client(format!("the trial balance of ledger {ledger}")))?
            .value;
        let check = ledger_check(ledger.0, &trial.total, exact_totals.then(|| expected.ledger_totals(ledger_index)));
        if !check.balanced {
            validation.problem(format!("ledger {ledger}: the trial balance is not balanced: {check:?}"));
        }
        if check.matches_expected == Some(false) {
            let want = expected.ledger_totals(ledger_index);
            validation.problem(format!("ledger {ledger}: totals {check:?}, expected {want:?}"));
        }
        validation.ledgers.push(check);
    }
    Ok(())
}

/// The check of one ledger's totals, against `expected` if given.
pub fn ledger_check(ledger: u32, total: &BalanceTotals, expected: Option<Balances>) -> LedgerCheck {
    let found = Balances {
        debits_pending: total.debits_pending,
        debits_posted: total.debits_posted,
        credits_pending: total.credits_pending,
        credits_posted: total.credits_posted,
    };
    LedgerCheck {
        ledger,
        accounts: total.accounts,
        debits_posted: total.debits_posted.to_string(),
        credits_posted: total.credits_posted.to_string(),
        debits_pending: total.debits_pending.to_string(),
        credits_pending: total.credits_pending.to_string(),
        balanced: total.is_balanced(),
        matches_expected: expected.map(|expected| expected == found),
    }
}

#[cfg(test)]
mod tests {
    use coffer_ledger::{AccountFlags, AccountId, AccountKind, LedgerId, TransferId};

    use super::*;

    #[test]
    fn a_stored_transfer_matches_when_only_the_timestamp_was_added() {
        let sent = Transfer { id: TransferId(5), amount: 7, ..Default::default() };
        assert_eq!(compare_transfer(&sent, Some(&Transfer { timestamp: 99, ..sent })), None);
        assert!(compare_transfer(&sent, None).unwrap().contains("not found"));
        assert!(compare_transfer(&sent, Some(&sent)).unwrap().contains("no timestamp"));
        let other = Transfer { amount: 8, timestamp: 99, ..sent };
        assert!(compare_transfer(&sent, Some(&other)).unwrap().contains("stored"));
    }

    #[test]
    fn accounts_must_match_shape_and_balances() {
        let created = Account {
            id: AccountId(3),
            ledger: LedgerId(9_001),
            code: 101,
            kind: AccountKind::Cash,
            ..Default::default()
        };
        let expected = Balances { debits_posted: 10, ..Default::default() };
        let stored = Account { debits_posted: 10, timestamp: 5, ..created };
        assert_eq!(compare_account(&created, expected, Some(&stored)), None);
        assert!(compare_account(&created, Balances::default(), Some(&stored)).unwrap().contains("expected"));
        let other_kind = Account { kind: AccountKind::Other, ..stored };
        assert!(compare_account(&created, expected, Some(&other_kind)).unwrap().contains("created"));
        assert!(compare_account(&created, expected, None).unwrap().contains("not found"));
    }

    #[test]
    fn an_account_over_its_credit_limit_fails_validation_even_as_expected() {
        let created = Account {
            id: AccountId(4),
            ledger: LedgerId(9_001),
            flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            ..Default::default()
        };
        // The generator expected exactly these balances, and they break the limit.
        let expected = Balances { debits_posted: 10, credits_posted: 10, credits_pending: 1, ..Default::default() };
        let stored = Account { debits_posted: 10, credits_posted: 10, credits_pending: 1, ..created };
        let problem = compare_account(&created, expected, Some(&stored)).unwrap();
        assert_eq!(problem, "account 4: credits_must_not_exceed_debits, but credits 11 exceed debits_posted 10");
    }

    #[test]
    fn trial_balances_must_balance_and_match_when_asked() {
        let total =
            BalanceTotals { accounts: 2, debits_pending: 5, debits_posted: 10, credits_pending: 5, credits_posted: 10 };
        let same = Balances { debits_pending: 5, debits_posted: 10, credits_pending: 5, credits_posted: 10 };
        let check = ledger_check(1, &total, Some(same));
        assert!(check.balanced);
        assert_eq!(check.matches_expected, Some(true));
        assert_eq!(ledger_check(1, &total, None).matches_expected, None);
        let unbalanced = BalanceTotals { credits_posted: 11, ..total };
        assert!(!ledger_check(1, &unbalanced, None).balanced);
        assert_eq!(ledger_check(1, &total, Some(Balances::default())).matches_expected, Some(false));
    }
}
