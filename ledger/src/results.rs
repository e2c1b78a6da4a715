//! Per-event result codes.
//!
//! Every event of a batch gets exactly one result. **The variants of each enum
//! are declared in precedence order**: when an event breaks several rules, the
//! one declared first is reported. The state machine checks them in this
//! order, so the same batch gives the same results on every replica.

use std::fmt;

macro_rules! result_codes {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every result, in precedence order.
            pub const ALL: &'static [Self] = &[$( Self::$variant, )*];

            /// The result's snake-case name, as shown to users and on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                }
            }

            /// The result with this snake-case name, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|result| result.as_str() == name)
            }

            /// The result's stable numeric code: its position in [`Self::ALL`].
            pub const fn code(self) -> u16 {
                self as u16
            }

            /// The result with this numeric code, if any.
            pub fn from_code(code: u16) -> Option<Self> {
                Self::ALL.get(usize::from(code)).copied()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

result_codes! {
    /// The result of one `create_ledgers` event.
    CreateLedgerResult {
        /// The ledger was created.
        Created = "created",
        /// `timestamp` must be `0`: the state machine sets it.
        TimestampMustBeZero = "timestamp_must_be_zero",
        /// `id` must not be `0`.
        IdMustNotBeZero = "id_must_not_be_zero",
        /// `id` must not be `u32::MAX`.
        IdMustNotBeIntMax = "id_must_not_be_int_max",
        /// A ledger with this id exists with another currency.
        ExistsWithDifferentCurrency = "exists_with_different_currency",
        /// A ledger with this id exists with another scale.
        ExistsWithDifferentScale = "exists_with_different_scale",
        /// A ledger with this id exists with another name.
        ExistsWithDifferentName = "exists_with_different_name",
        /// A ledger with this id exists with another budget policy or
        /// warning share.
        ExistsWithDifferentBudget = "exists_with_different_budget",
        /// The same ledger exists already: a safe retry.
        Exists = "exists",
        /// `currency` must be 1 to 12 of `A-Z`, `0-9` and `_`.
        CurrencyMustBeValid = "currency_must_be_valid",
        /// `scale` must not exceed 18.
        ScaleMustNotExceedMax = "scale_must_not_exceed_max",
        /// `name` must not be empty.
        NameMustNotBeEmpty = "name_must_not_be_empty",
        /// `name` must not exceed 64 bytes.
        NameTooLong = "name_too_long",
        /// A ledger is created `open`: `period` must be `open`.
        PeriodMustBeOpen = "period_must_be_open",
        /// `budget.ledger` must not be the ledger itself.
        BudgetLedgerMustBeDifferent = "budget_ledger_must_be_different",
        /// `budget.code_min ..= budget.code_max` must be a range of non-zero
        /// codes (or both `0`), and only with a budget ledger.
        BudgetCodesMustBeValid = "budget_codes_must_be_valid",
        /// No ledger has the id in `budget.ledger`.
        BudgetLedgerNotFound = "budget_ledger_not_found",
        /// `warn_percent` must not exceed 100.
        WarnPercentMustNotExceedMax = "warn_percent_must_not_exceed_max",
    }
}

result_codes! {
    /// The result of one `set_periods` event.
    SetPeriodResult {
        /// The ledger's period moved forward.
        Changed = "changed",
        /// `ledger` must not be `0`.
        LedgerMustNotBeZero = "ledger_must_not_be_zero",
        /// No ledger has this id.
        LedgerNotFound = "ledger_not_found",
        /// Only a year-end close moves a ledger into or out of `closing`.
        CloseInProgress = "close_in_progress",
        /// The ledger is in this period already: a safe retry.
        Unchanged = "unchanged",
        /// A period moves forward only (`open` → `adjustment` → `closed`).
        PeriodCannotReopen = "period_cannot_reopen",
        /// A period with pending transfers still reserving amounts cannot
        /// close: post or void them first.
        PendingTransfersOpen = "pending_transfers_open",
    }
}

result_codes! {
    /// The result of one `create_accounts` event.
    CreateAccountResult {
        /// The account was created.
        Created = "created",
        /// Another event of this linked chain failed, so this one was not applied.
        LinkedEventFailed = "linked_event_failed",
        /// The batch ended inside a linked chain (its last event has `linked`).
        LinkedEventChainOpen = "linked_event_chain_open",
        /// `timestamp` must be `0`: the state machine sets it.
        TimestampMustBeZero = "timestamp_must_be_zero",
        /// `flags` has a bit no flag is defined for.
        ReservedFlag = "reserved_flag",
        /// `id` must not be `0`.
        IdMustNotBeZero = "id_must_not_be_zero",
        /// `id` must not be `u128::MAX`.
        IdMustNotBeIntMax = "id_must_not_be_int_max",
        /// An account with this id exists with other flags (`closed` aside).
        ExistsWithDifferentFlags = "exists_with_different_flags",
        /// An account with this id exists with another `user_data_128`.
        ExistsWithDifferentUserData128 = "exists_with_different_user_data_128",
        /// An account with this id exists with another `user_data_64`.
        ExistsWithDifferentUserData64 = "exists_with_different_user_data_64",
        /// An account with this id exists with another `user_data_32`.
        ExistsWithDifferentUserData32 = "exists_with_different_user_data_32",
        /// An account with this id exists in another ledger.
        ExistsWithDifferentLedger = "exists_with_different_ledger",
        /// An account with this id exists with another code.
        ExistsWithDifferentCode = "exists_with_different_code",
        /// An account with this id exists with another kind.
        ExistsWithDifferentKind = "exists_with_different_kind",
        /// The same account exists already: a safe retry.
        Exists = "exists",
        /// `debits_must_not_exceed_credits` and `credits_must_not_exceed_debits`
        /// cannot both be set.
        FlagsAreMutuallyExclusive = "flags_are_mutually_exclusive",
        /// `debits_pending` must be `0` in a request.
        DebitsPendingMustBeZero = "debits_pending_must_be_zero",
        /// `debits_posted` must be `0` in a request.
        DebitsPostedMustBeZero = "debits_posted_must_be_zero",
        /// `credits_pending` must be `0` in a request.
        CreditsPendingMustBeZero = "credits_pending_must_be_zero",
        /// `credits_posted` must be `0` in a request.
        CreditsPostedMustBeZero = "credits_posted_must_be_zero",
        /// `ledger` must not be `0`.
        LedgerMustNotBeZero = "ledger_must_not_be_zero",
        /// `code` must not be `0`.
        CodeMustNotBeZero = "code_must_not_be_zero",
        /// No ledger has the id in `ledger`.
        LedgerNotFound = "ledger_not_found",
        /// The ledger is being closed: its accounts are fixed until the close
        /// finishes.
        LedgerPeriodClosing = "ledger_period_closing",
    }
}

result_codes! {
    /// The result of one `create_transfers` event.
    CreateTransferResult {
        /// The transfer was created (for a post or void: the pending transfer
        /// was posted or voided).
        Created = "created",
        /// Another event of this linked chain failed, so this one was not applied.
        LinkedEventFailed = "linked_event_failed",
        /// The batch ended inside a linked chain (its last event has `linked`).
        LinkedEventChainOpen = "linked_event_chain_open",
        /// `timestamp` must be `0`: the state machine sets it.
        TimestampMustBeZero = "timestamp_must_be_zero",
        /// `flags` has a bit no flag is defined for.
        ReservedFlag = "reserved_flag",
        /// `id` must not be `0`.
        IdMustNotBeZero = "id_must_not_be_zero",
        /// `id` must not be `u128::MAX`.
        IdMustNotBeIntMax = "id_must_not_be_int_max",
        /// A transfer with this id exists with other flags.
        ExistsWithDifferentFlags = "exists_with_different_flags",
        /// A transfer with this id exists with another `pending_id`.
        ExistsWithDifferentPendingId = "exists_with_different_pending_id",
        /// A transfer with this id exists with another `timeout`.
        ExistsWithDifferentTimeout = "exists_with_different_timeout",
        /// A transfer with this id exists with another debit account.
        ExistsWithDifferentDebitAccountId = "exists_with_different_debit_account_id",
        /// A transfer with this id exists with another credit account.
        ExistsWithDifferentCreditAccountId = "exists_with_different_credit_account_id",
        /// A transfer with this id exists with another amount.
        ExistsWithDifferentAmount = "exists_with_different_amount",
        /// A transfer with this id exists with another `user_data_128`.
        ExistsWithDifferentUserData128 = "exists_with_different_user_data_128",
        /// A transfer with this id exists with another `user_data_64`.
        ExistsWithDifferentUserData64 = "exists_with_different_user_data_64",
        /// A transfer with this id exists with another `user_data_32`.
        ExistsWithDifferentUserData32 = "exists_with_different_user_data_32",
        /// A transfer with this id exists in another ledger.
        ExistsWithDifferentLedger = "exists_with_different_ledger",
        /// A transfer with this id exists with another code.
        ExistsWithDifferentCode = "exists_with_different_code",
        /// A transfer with this id exists with another kind.
        ExistsWithDifferentKind = "exists_with_different_kind",
        /// The same transfer exists already: a safe retry.
        Exists = "exists",
        /// An earlier event with this id failed for a reason that may since
        /// have cleared; its outcome stands, so this retry fails too.
        IdAlreadyFailed = "id_already_failed",
        /// The flags combine two that exclude each other (`post_pending` with
        /// `void_pending`, or either of them with `pending`, `balancing_*` or
        /// `closing_*`).
        FlagsAreMutuallyExclusive = "flags_are_mutually_exclusive",
        /// `debit_account_id` must not be `0`.
        DebitAccountIdMustNotBeZero = "debit_account_id_must_not_be_zero",
        /// `debit_account_id` must not be `u128::MAX`.
        DebitAccountIdMustNotBeIntMax = "debit_account_id_must_not_be_int_max",
        /// `credit_account_id` must not be `0`.
        CreditAccountIdMustNotBeZero = "credit_account_id_must_not_be_zero",
        /// `credit_account_id` must not be `u128::MAX`.
        CreditAccountIdMustNotBeIntMax = "credit_account_id_must_not_be_int_max",
        /// The debit and credit accounts must differ.
        AccountsMustBeDifferent = "accounts_must_be_different",
        /// `pending_id` must be `0` unless posting or voiding.
        PendingIdMustBeZero = "pending_id_must_be_zero",
        /// Posting or voiding needs a `pending_id`.
        PendingIdMustNotBeZero = "pending_id_must_not_be_zero",
        /// `pending_id` must not be `u128::MAX`.
        PendingIdMustNotBeIntMax = "pending_id_must_not_be_int_max",
        /// `pending_id` must not be the event's own id.
        PendingIdMustBeDifferent = "pending_id_must_be_different",
        /// `timeout` is only for `pending` transfers.
        TimeoutReservedForPendingTransfer = "timeout_reserved_for_pending_transfer",
        /// `closing_debit` / `closing_credit` need `pending`.
        ClosingTransferMustBePending = "closing_transfer_must_be_pending",
        /// `amount` must not be `0` (except when posting or voiding).
        AmountMustNotBeZero = "amount_must_not_be_zero",
        /// `ledger` must not be `0`.
        LedgerMustNotBeZero = "ledger_must_not_be_zero",
        /// `code` must not be `0`.
        CodeMustNotBeZero = "code_must_not_be_zero",
        /// No account has the id in `debit_account_id`.
        DebitAccountNotFound = "debit_account_not_found",
        /// No account has the id in `credit_account_id`.
        CreditAccountNotFound = "credit_account_not_found",
        /// The two accounts are kept in different ledgers.
        AccountsMustHaveTheSameLedger = "accounts_must_have_the_same_ledger",
        /// No ledger has the id in the transfer's `ledger` (which is not its
        /// accounts').
        LedgerNotFound = "ledger_not_found",
        /// The transfer's `ledger` differs from its accounts'.
        TransferMustHaveTheSameLedgerAsAccounts = "transfer_must_have_the_same_ledger_as_accounts",
        /// The debit account's kind is not the one the transfer kind requires
        /// (an expenditure debits a non-cash account; a receipt and a cash
        /// transfer debit a cash account).
        DebitAccountHasWrongKind = "debit_account_has_wrong_kind",
        /// The credit account's kind is not the one the transfer kind requires
        /// (an expenditure and a cash transfer credit a cash account; a
        /// receipt credits a non-cash account).
        CreditAccountHasWrongKind = "credit_account_has_wrong_kind",
        /// No transfer has the id in `pending_id`.
        PendingTransferNotFound = "pending_transfer_not_found",
        /// The transfer named by `pending_id` is not a pending transfer.
        PendingTransferNotPending = "pending_transfer_not_pending",
        /// The transfer's ledger (a post's or void's: the pending
        /// transfer's) is in its `closed` period.
        LedgerPeriodClosed = "ledger_period_closed",
        /// The transfer's ledger is in its `adjustment` period and the
        /// transfer is not flagged `adjustment`.
        LedgerPeriodInAdjustment = "ledger_period_in_adjustment",
        /// `debit_account_id` is set and differs from the pending transfer's.
        PendingTransferHasDifferentDebitAccountId = "pending_transfer_has_different_debit_account_id",
        /// `credit_account_id` is set and differs from the pending transfer's.
        PendingTransferHasDifferentCreditAccountId = "pending_transfer_has_different_credit_account_id",
        /// `ledger` is set and differs from the pending transfer's.
        PendingTransferHasDifferentLedger = "pending_transfer_has_different_ledger",
        /// `code` is set and differs from the pending transfer's.
        PendingTransferHasDifferentCode = "pending_transfer_has_different_code",
        /// `kind` differs from the pending transfer's.
        PendingTransferHasDifferentKind = "pending_transfer_has_different_kind",
        /// A post's `amount` exceeds the pending amount.
        ExceedsPendingTransferAmount = "exceeds_pending_transfer_amount",
        /// A void's `amount` is neither `0`, `AMOUNT_MAX` nor the pending amount.
        PendingTransferHasDifferentAmount = "pending_transfer_has_different_amount",
        /// The pending transfer was posted already.
        PendingTransferAlreadyPosted = "pending_transfer_already_posted",
        /// The pending transfer was voided already.
        PendingTransferAlreadyVoided = "pending_transfer_already_voided",
        /// The pending transfer's timeout has passed: it can no longer be
        /// posted or voided.
        PendingTransferExpired = "pending_transfer_expired",
        /// The debit account is closed.
        DebitAccountAlreadyClosed = "debit_account_already_closed",
        /// The credit account is closed.
        CreditAccountAlreadyClosed = "credit_account_already_closed",
        /// `debits_pending` of the debit account would overflow.
        OverflowsDebitsPending = "overflows_debits_pending",
        /// `credits_pending` of the credit account would overflow.
        OverflowsCreditsPending = "overflows_credits_pending",
        /// `debits_posted` of the debit account would overflow.
        OverflowsDebitsPosted = "overflows_debits_posted",
        /// `credits_posted` of the credit account would overflow.
        OverflowsCreditsPosted = "overflows_credits_posted",
        /// `debits_pending + debits_posted` of the debit account would overflow.
        OverflowsDebits = "overflows_debits",
        /// `credits_pending + credits_posted` of the credit account would overflow.
        OverflowsCredits = "overflows_credits",
        /// `timestamp + timeout` would overflow.
        OverflowsTimeout = "overflows_timeout",
        /// The debit account has `debits_must_not_exceed_credits` and this
        /// transfer would take its debits (pending + posted) past its credits.
        ExceedsCredits = "exceeds_credits",
        /// The credit account has `credits_must_not_exceed_debits` and this
        /// transfer would take its credits (pending + posted) past its debits.
        ExceedsDebits = "exceeds_debits",
        /// The transfer's ledger has a budget policy that controls it, and
        /// its linked chain carries no budget leg for it: a new transfer of
        /// the same amount in the policy's budget ledger.
        BudgetLegMissing = "budget_leg_missing",
    }
}

impl CreateTransferResult {
    /// Whether this failure depends on state that may change (an account or
    /// pending transfer that may be created later, a balance, a closed
    /// account). Such a failure is recorded, and a retry of the same id gets
    /// [`Self::IdAlreadyFailed`], so an id's outcome never changes.
    /// `overflows_timeout` is not among them: it depends only on the event's
    /// own timestamp and timeout, and timestamps only grow, so it is final.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::DebitAccountNotFound
                | Self::CreditAccountNotFound
                | Self::LedgerNotFound
                | Self::PendingTransferNotFound
                | Self::DebitAccountAlreadyClosed
                | Self::CreditAccountAlreadyClosed
                | Self::OverflowsDebitsPending
                | Self::OverflowsCreditsPending
                | Self::OverflowsDebitsPosted
                | Self::OverflowsCreditsPosted
                | Self::OverflowsDebits
                | Self::OverflowsCredits
                | Self::ExceedsCredits
                | Self::ExceedsDebits
        )
    }

    /// Whether the event succeeded: `created`, or `exists` for a safe retry.
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Created | Self::Exists)
    }
}

impl CreateAccountResult {
    /// Whether the event succeeded: `created`, or `exists` for a safe retry.
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Created | Self::Exists)
    }
}

impl CreateLedgerResult {
    /// Whether the event succeeded: `created`, or `exists` for a safe retry.
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Created | Self::Exists)
    }
}

result_codes! {
    /// The result of a year-end close's `begin`, `finish` or `abort` step
    /// (see [`crate::close`]).
    CloseResult {
        /// The close began: the year is `closing`.
        Begun = "begun",
        /// The year is `closed`: the close finished.
        Finished = "finished",
        /// The close was undone: the year is back in its earlier period.
        Aborted = "aborted",
        /// `ledger` must not be `0`.
        LedgerMustNotBeZero = "ledger_must_not_be_zero",
        /// No ledger has the id in `ledger`.
        LedgerNotFound = "ledger_not_found",
        /// The year was closed by this same close: a safe retry.
        Exists = "exists",
        /// The same close is under way: a retry that continues it.
        Resumed = "resumed",
        /// The year is being closed, or was closed, by a close with other fields.
        CloseDiffers = "close_differs",
        /// The year was locked without a close.
        LedgerPeriodClosed = "ledger_period_closed",
        /// Pending transfers still reserve amounts in the year: post or void them first.
        PendingTransfersOpen = "pending_transfers_open",
        /// `next_ledger` must not be `0` or the year itself.
        NextLedgerMustBeDifferent = "next_ledger_must_be_different",
        /// No ledger has the id in `next_ledger`.
        NextLedgerNotFound = "next_ledger_not_found",
        /// The next year must be `open` to take its opening balances.
        NextLedgerMustBeOpen = "next_ledger_must_be_open",
        /// The next year must have the year's currency and scale.
        NextLedgerCurrencyDiffers = "next_ledger_currency_differs",
        /// `code` must not be `0`.
        CodeMustNotBeZero = "code_must_not_be_zero",
        /// `code` falls under a budget policy of one of the two ledgers: the
        /// close's transfers would need budget legs.
        CodeUnderBudgetControl = "code_under_budget_control",
        /// `nominal` must name 1 to 8 ranges of non-zero codes, each `min <= max`.
        NominalCodesMustBeValid = "nominal_codes_must_be_valid",
        /// `carry` must name at most 8 such ranges, none sharing a code with `nominal`.
        CarryCodesMustBeValid = "carry_codes_must_be_valid",
        /// `account_offset` must not be `0`.
        AccountOffsetMustNotBeZero = "account_offset_must_not_be_zero",
        /// `first_transfer_id` must not be `0`, and the close's ids must stay below `u128::MAX`.
        FirstTransferIdMustBeValid = "first_transfer_id_must_be_valid",
        /// No account has the id in `net_position`.
        NetPositionNotFound = "net_position_not_found",
        /// The net position must be an account of the year being closed.
        NetPositionMustBeInLedger = "net_position_must_be_in_ledger",
        /// The net position's code must not be nominal (it would close into itself).
        NetPositionMustNotBeNominal = "net_position_must_not_be_nominal",
        /// The net position must carry no balance limit flag, and not be closed.
        NetPositionMustBeUnlimited = "net_position_must_be_unlimited",
        /// No account has the id in `opening_account`.
        OpeningAccountNotFound = "opening_account_not_found",
        /// The opening account must be an account of the next year.
        OpeningAccountMustBeInNextLedger = "opening_account_must_be_in_next_ledger",
        /// The opening account must carry no balance limit flag, and not be closed.
        OpeningAccountMustBeUnlimited = "opening_account_must_be_unlimited",
        /// The year is not being closed.
        NotClosing = "not_closing",
        /// A nominal code's accounts do not net to zero: the closing transfers are not all posted.
        NominalBalanceRemains = "nominal_balance_remains",
        /// The close has posted fewer transfers than its plan holds.
        TransfersMissing = "transfers_missing",
        /// The close has posted transfers already: it can only be finished.
        AlreadyPosted = "already_posted",
    }
}

result_codes! {
    /// The result of a reconciliation operation (see [`crate::reconcile`]).
    ReconcileResult {
        /// The statement's reconciliation was kept.
        Recorded = "recorded",
        /// The statement was reconciled again and the outcome changed.
        Rerun = "rerun",
        /// The statement was reconciled again with the same outcome: a safe retry.
        Unchanged = "unchanged",
        /// The lines and transfers were matched by hand.
        Matched = "matched",
        /// No account has this id.
        AccountNotFound = "account_not_found",
        /// Only a cash account is reconciled with a bank statement.
        AccountNotCash = "account_not_cash",
        /// The statement id must be 1 to 64 bytes, and references at most 64.
        StatementIdInvalid = "statement_id_invalid",
        /// A statement has at most 8,189 lines and a reconciliation at most 32,756 transfers.
        TooManyLines = "too_many_lines",
        /// The statement's opening balance is not the previous statement's closing balance.
        OpeningBalanceDiscontinuous = "opening_balance_discontinuous",
        /// The statement ends before the account's latest statement does.
        StatementBeforePrevious = "statement_before_previous",
        /// No reconciliation of this account has this statement id.
        ReconciliationNotFound = "reconciliation_not_found",
        /// A manual match needs a reason (at most 256 bytes).
        ReasonMustNotBeEmpty = "reason_must_not_be_empty",
        /// A manual match names at least one line or transfer.
        NothingToMatch = "nothing_to_match",
        /// The statement has no line with this index.
        LineNotFound = "line_not_found",
        /// The line is matched already.
        LineAlreadyMatched = "line_already_matched",
        /// The transfer is matched already, or is not a posted transfer of the account.
        TransferNotUnmatched = "transfer_not_unmatched",
    }
}

impl ReconcileResult {
    /// Whether the operation succeeded (a safe retry included).
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Recorded | Self::Rerun | Self::Unchanged | Self::Matched)
    }
}

impl CloseResult {
    /// Whether the step succeeded (a safe retry included).
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Begun | Self::Finished | Self::Aborted | Self::Exists | Self::Resumed)
    }
}

impl SetPeriodResult {
    /// Whether the event succeeded: `changed`, or `unchanged` for a safe retry.
    pub const fn is_success(self) -> bool {
        matches!(self, Self::Changed | Self::Unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for result in CreateTransferResult::ALL {
            assert_eq!(CreateTransferResult::from_code(result.code()), Some(*result));
            assert_eq!(CreateTransferResult::from_name(result.as_str()), Some(*result));
        }
        for result in CreateAccountResult::ALL {
            assert_eq!(CreateAccountResult::from_code(result.code()), Some(*result));
        }
        for result in CreateLedgerResult::ALL {
            assert_eq!(CreateLedgerResult::from_code(result.code()), Some(*result));
        }
        for result in SetPeriodResult::ALL {
            assert_eq!(SetPeriodResult::from_code(result.code()), Some(*result));
        }
        for result in CloseResult::ALL {
            assert_eq!(CloseResult::from_name(result.as_str()), Some(*result));
        }
        assert_eq!(CreateTransferResult::from_code(u16::MAX), None);
    }
}
