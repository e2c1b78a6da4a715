//! `CloseFiscalYear`: the leader runs a year-end close as a bounded sequence
//! of entries (see [`coffer_ledger::close`]): begin (the year freezes), plan
//! on a read view, create the next year's accounts, post the closing and
//! opening transfers in batches, finish (the year locks). Every step is
//! idempotent, so a retry after a lost leader or a timeout continues the
//! close where it stopped.

use std::time::Instant;

use coffer_ledger::close::{plan_close, ClosePlan};
use coffer_ledger::{
    trial_balance, trial_balance_as_of, CloseResult, CloseStep, LedgerId, Operation, OperationResults, QueryError,
    Store, Transfer, TransferId, BATCH_EVENTS_MAX,
};
use tonic::{Response, Status};

use super::{amounts_of, scales_of, Deadline, Proposed, Shared};
use crate::access::Caller;
use crate::convert;
use crate::node::Node;
use crate::proto;

/// What one run of a close did, for its response.
#[derive(Default)]
struct Progress {
    entries: u64,
    served: Option<proto::Served>,
}

/// Serves `CloseFiscalYear` on this node: runs it here if this node leads,
/// forwards it to the leader otherwise.
pub(super) async fn serve<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    message: proto::CloseFiscalYearRequest,
    deadline: Deadline,
    forwarded: bool,
) -> Result<Response<proto::CloseFiscalYearResponse>, Status> {
    let started = Instant::now();
    let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
    let ledger = LedgerId(message.ledger);
    let mut progress = Progress::default();
    let first = match message.abort {
        true => CloseStep::Abort { ledger },
        false => CloseStep::Begin(Box::new(convert::year_close_from_wire(&message)?)),
    };
    let result = match step(shared, caller, &mut progress, Operation::Close(first), deadline, forwarded).await? {
        Proposed::Applied(OperationResults::Close(result)) => result,
        Proposed::Applied(_) => {
            return Err(crate::status::internal("the node answered a close step with other results"))
        }
        Proposed::Forward(address) => {
            let answer = shared
                .leader_client(&address)?
                .close_fiscal_year(shared.forward_request(message, deadline, caller))
                .await;
            return shared.forwarded(&address, answer);
        }
    };
    let mut response = proto::CloseFiscalYearResponse { result: result.as_str().to_owned(), ..Default::default() };
    match result {
        CloseResult::Begun | CloseResult::Resumed => {
            run(shared, caller, &mut progress, ledger, deadline, &mut response).await?;
        }
        CloseResult::Exists => {}
        _ => {
            response.served = progress.served;
            return Ok(Response::new(response));
        }
    }
    report(shared, ledger, unit, deadline, &mut response).await?;
    for trial in [&mut response.before, &mut response.after, &mut response.next_after].into_iter().flatten() {
        trial.served = progress.served;
    }
    response.elapsed_ms = started.elapsed().as_millis() as u64;
    response.entries = progress.entries;
    response.served = progress.served;
    Ok(Response::new(response))
}

/// Proposes one entry of the close. Only the first may be forwarded (when
/// this node does not lead); a later one on a node that lost leadership
/// fails, and the client's retry continues the close at the new leader.
async fn step<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    progress: &mut Progress,
    operation: Operation,
    deadline: Deadline,
    forwarded: bool,
) -> Result<Proposed<OperationResults>, Status> {
    let answer = |served: proto::Served, results: OperationResults| Some((served, results));
    let proposed = shared
        .propose((operation, caller), deadline, forwarded || progress.entries > 0, "CloseFiscalYear", answer)
        .await?;
    Ok(match proposed {
        Proposed::Applied((served, results)) => {
            progress.entries += 1;
            progress.served = Some(served);
            Proposed::Applied(results)
        }
        Proposed::Forward(address) => Proposed::Forward(address),
    })
}

/// The results of a step that may not be forwarded.
async fn applied<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    progress: &mut Progress,
    operation: Operation,
    deadline: Deadline,
) -> Result<OperationResults, Status> {
    match step(shared, caller, progress, operation, deadline, true).await? {
        Proposed::Applied(results) => Ok(results),
        Proposed::Forward(address) => Err(Status::unavailable(format!(
            "leadership moved to {address} during the close; retry the same close to continue it there"
        ))),
    }
}

/// Plans the frozen year and posts the plan, then finishes the close.
async fn run<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    progress: &mut Progress,
    ledger: LedgerId,
    deadline: Deadline,
    response: &mut proto::CloseFiscalYearResponse,
) -> Result<(), Status> {
    let (_, planned) = shared.read(false, deadline, move |state| plan_close(state, ledger)).await?;
    let plan = match planned {
        Ok(plan) => plan,
        Err(error) => return Err(stop(shared, caller, progress, ledger, deadline, &error.to_string()).await),
    };
    for chunk in plan.accounts.chunks(BATCH_EVENTS_MAX) {
        let results =
            match applied(shared, caller, progress, Operation::CreateAccounts(chunk.to_vec()), deadline).await? {
                OperationResults::Accounts(results) => results,
                _ => return Err(crate::status::internal("the node answered create_accounts with other results")),
            };
        if let Some((account, result)) = chunk.iter().zip(&results).find(|(_, result)| !result.is_success()) {
            let reason = format!("account {} of ledger {}: {result}", account.id, account.ledger);
            return Err(stop(shared, caller, progress, ledger, deadline, &reason).await);
        }
    }
    for chunk in plan.closing.chunks(BATCH_EVENTS_MAX).chain(plan.opening.chunks(BATCH_EVENTS_MAX)) {
        let post = CloseStep::Post { ledger, transfers: chunk.to_vec() };
        let results = match applied(shared, caller, progress, Operation::Close(post), deadline).await? {
            OperationResults::Transfers(results) => results,
            _ => return Err(crate::status::internal("the node answered a close's post with other results")),
        };
        if let Some((transfer, result)) = chunk.iter().zip(&results).find(|(_, result)| !result.is_success()) {
            let reason = format!("transfer {}: {result}", transfer.id);
            return Err(stop(shared, caller, progress, ledger, deadline, &reason).await);
        }
    }
    let finish = CloseStep::Finish { ledger, transfers: plan.transfers() };
    match applied(shared, caller, progress, Operation::Close(finish), deadline).await? {
        OperationResults::Close(CloseResult::Finished | CloseResult::Exists) => {}
        OperationResults::Close(result) => {
            let reason = format!("finishing it answered {result}");
            return Err(stop(shared, caller, progress, ledger, deadline, &reason).await);
        }
        _ => return Err(crate::status::internal("the node answered a close's finish with other results")),
    }
    response.result = CloseResult::Finished.as_str().to_owned();
    fill_counts(&plan, response);
    Ok(())
}

/// The error for a close that could not go on: undone when it has posted
/// no transfer yet (the state machine decides), left `closing` otherwise.
async fn stop<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    progress: &mut Progress,
    ledger: LedgerId,
    deadline: Deadline,
    reason: &str,
) -> Status {
    let abort = Operation::Close(CloseStep::Abort { ledger });
    if let Ok(OperationResults::Close(CloseResult::Aborted)) = applied(shared, caller, progress, abort, deadline).await
    {
        return Status::failed_precondition(format!(
            "the close of ledger {ledger} cannot proceed: {reason}; it was undone and ledger {ledger} is back in \
             its earlier period"
        ));
    }
    Status::failed_precondition(format!(
        "the close of ledger {ledger} stopped: {reason}; ledger {ledger} stays closing (no writes): remove the cause \
         and run the same close again to continue it"
    ))
}

/// The close's counts and transfer ids, from its plan.
fn fill_counts(plan: &ClosePlan, response: &mut proto::CloseFiscalYearResponse) {
    response.closing_transfers = plan.closing.len() as u64;
    response.opening_transfers = plan.opening.len() as u64;
    response.accounts_opened = plan.accounts.len() as u64;
    response.transfer_ids = id_ranges(plan.closing.iter().chain(&plan.opening));
}

/// Consecutive ids folded into ranges.
fn id_ranges<'t>(transfers: impl Iterator<Item = &'t Transfer>) -> Vec<proto::IdRange> {
    let mut ranges: Vec<(TransferId, TransferId)> = Vec::new();
    for transfer in transfers {
        match ranges.last_mut() {
            Some((_, last)) if last.0.checked_add(1) == Some(transfer.id.0) => *last = transfer.id,
            _ => ranges.push((transfer.id, transfer.id)),
        }
    }
    ranges
        .into_iter()
        .map(|(first, last)| proto::IdRange { first: first.0.to_string(), last: last.0.to_string() })
        .collect()
}

/// Fills the trial balances: the year as the close began, the year and the
/// next year now; for a retry of a finished close, its counts too.
async fn report<N: Node>(
    shared: &Shared<N>,
    ledger: LedgerId,
    unit: proto::AmountUnit,
    deadline: Deadline,
    response: &mut proto::CloseFiscalYearResponse,
) -> Result<(), Status> {
    let (_, found) = shared
        .read(false, deadline, move |state| {
            let year = state.ledger(ledger)?.ok_or(QueryError::LedgerNotFound(ledger))?;
            let record = year.close.ok_or(QueryError::LedgerNotFound(ledger))?;
            let next = record.close.next_ledger;
            let before = trial_balance_as_of(state, ledger, record.begun_at)?;
            let after = trial_balance(state, ledger)?;
            let next_after = trial_balance(state, next)?;
            let scales = scales_of(state, [ledger, next].into())?;
            Ok::<_, QueryError>((record, before, after, next_after, scales))
        })
        .await?;
    let (record, before, after, next_after, scales) = found.map_err(|error| crate::status::query_error(&error))?;
    let amounts = amounts_of(unit, &scales);
    response.before = Some(convert::trial_balance_to_wire(&before, amounts));
    response.after = Some(convert::trial_balance_to_wire(&after, amounts));
    response.next_after = Some(convert::trial_balance_to_wire(&next_after, amounts));
    if response.transfer_ids.is_empty() {
        // A retry of a finished close: the range of ids it reserved.
        let close = &record.close;
        let last = close.opening_id(record.accounts, record.accounts.saturating_sub(1));
        if let Some(last) = last.filter(|_| record.accounts > 0) {
            let first = close.first_transfer_id.to_string();
            response.transfer_ids = vec![proto::IdRange { first, last: last.0.to_string() }];
        }
        response.closing_transfers = 0;
        response.opening_transfers = 0;
    }
    Ok(())
}
