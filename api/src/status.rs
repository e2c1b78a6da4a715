//! Every gRPC status the API answers with is made here, in one place.
//!
//! | failure | code | retry? |
//! | --- | --- | --- |
//! | a request field is invalid ([`FieldError`], a refused batch) | `INVALID_ARGUMENT` | no |
//! | this node is not the leader / no leader is known | `UNAVAILABLE` (leader's address in the message and in `coffer-leader`) | at the leader |
//! | leadership lost after the write was appended (outcome unknown), raft dropped the proposal, a read not confirmed in time, the node stopped | `UNAVAILABLE` | yes, with the same ids |
//! | a queue is full (driver, proposals, reads), or the server serves its most change feeds | `RESOURCE_EXHAUSTED` | after a backoff |
//! | a change feed ends because its server shuts down | `UNAVAILABLE` | from the last cursor, at another node |
//! | the request's deadline passed | `DEADLINE_EXCEEDED` | a write's outcome is unknown: retry with the same ids |
//! | a membership change is already pending | `ABORTED` | after it is applied |
//! | the request cannot succeed in the cluster's present state (a leader-transfer target not caught up, an account without history, a snapshot directory that exists); later: fenced by a newer region epoch | `FAILED_PRECONDITION` | no |
//! | an account or ledger does not exist (reads) | `NOT_FOUND` | no |
//! | a stored record failed its checksum | `DATA_LOSS` | no |
//! | anything else the node failed at | `INTERNAL` | no |

use std::time::Duration;

use coffer_consensus::StorageError;
use coffer_consensus::{ProposalError, ReadError, RequestError};
use coffer_ledger::{ApplyError, QueryError, StoreError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::convert::FieldError;

/// Metadata key of the leader's client address (`host:port`) on an
/// `UNAVAILABLE` answer from a node that is not the leader.
pub const LEADER_METADATA_KEY: &str = "coffer-leader";
/// Metadata key of the leader's node id on the same answers.
pub const LEADER_ID_METADATA_KEY: &str = "coffer-leader-id";
/// Metadata key a follower sets when it forwards a write to the leader (its
/// own node id), so the write is never forwarded twice.
pub const FORWARDED_METADATA_KEY: &str = "coffer-forwarded";

impl From<FieldError> for Status {
    fn from(error: FieldError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

/// `UNAVAILABLE`: this node cannot serve the request, `leader` (with its
/// client `address`, if the address book has it) can.
pub fn not_leader(node: u64, leader: Option<u64>, address: Option<&str>) -> Status {
    let message = match (leader, address) {
        (Some(leader), Some(address)) => {
            format!("node {node} is not the leader; the leader is node {leader} at {address}")
        }
        (Some(leader), None) => {
            format!("node {node} is not the leader; the leader is node {leader}, whose address this node does not know")
        }
        (None, _) => format!("node {node} is not the leader and knows of none (an election may be under way); retry"),
    };
    let mut status = Status::unavailable(message);
    if let Some(leader) = leader {
        status.metadata_mut().insert(LEADER_ID_METADATA_KEY, MetadataValue::from(leader));
    }
    // An address that is not valid metadata (it came from the node's own
    // configuration) is still in the message.
    if let Some(value) = address.and_then(|address| MetadataValue::try_from(address).ok()) {
        status.metadata_mut().insert(LEADER_METADATA_KEY, value);
    }
    status
}

/// `DEADLINE_EXCEEDED` for a request that ran out of time in `what`; for a
/// write, the outcome is unknown.
pub fn deadline_exceeded(what: &str, deadline: Duration, write: bool) -> Status {
    let outcome = if write { "; the write's outcome is unknown: retry with the same ids" } else { "" };
    Status::deadline_exceeded(format!("{what} did not finish within {} ms{outcome}", deadline.as_millis()))
}

/// The status of a failed request to the node. `address_of` gives a node's
/// client address from the address book; a standby's refusal of a write
/// names `other_region`'s addresses (the primary's, when it has any).
pub fn request_error(
    node: u64,
    error: &RequestError,
    address_of: impl Fn(u64) -> Option<String>,
    other_region: &[String],
) -> Status {
    let not_leader_status = |leader: Option<u64>| not_leader(node, leader, leader.and_then(&address_of).as_deref());
    let message = error.to_string();
    match error {
        RequestError::Stopped { .. } => Status::unavailable(format!("{message}; try another node")),
        RequestError::Overloaded { .. } => Status::resource_exhausted(message),
        RequestError::Proposal(error) => match error {
            ProposalError::NotLeader { leader } => not_leader_status(*leader),
            ProposalError::Overloaded { .. } => Status::resource_exhausted(message),
            ProposalError::Dropped { .. } | ProposalError::LeadershipLost => Status::unavailable(message),
            ProposalError::TooLarge { .. } | ProposalError::Invalid { .. } => Status::invalid_argument(message),
            ProposalError::ConfChangePending => Status::aborted(message),
            ProposalError::NotCaughtUp { .. } | ProposalError::WouldLoseFaultTolerance { .. } => {
                Status::failed_precondition(message)
            }
            ProposalError::Rejected(ApplyError::BatchTooLarge { .. }) => Status::invalid_argument(message),
            ProposalError::Rejected(ApplyError::Store(error)) => store_error(error),
            ProposalError::Rejected(_) => Status::internal(message),
            ProposalError::NotWritable { standby: false, .. } => Status::unavailable(message),
            ProposalError::NotWritable { standby: true, .. } if !other_region.is_empty() => {
                Status::failed_precondition(format!("{message} (its nodes: {})", other_region.join(", ")))
            }
            ProposalError::NotWritable { standby: true, .. } | ProposalError::RegionRefused { .. } => {
                Status::failed_precondition(message)
            }
        },
        RequestError::Read(error) => match error {
            ReadError::NotLeader { leader } => not_leader_status(*leader),
            ReadError::Timeout { .. } => Status::unavailable(message),
            ReadError::Overloaded { .. } => Status::resource_exhausted(message),
        },
        RequestError::Invalid { .. } => Status::invalid_argument(message),
        RequestError::Abandoned { .. } => Status::internal(message),
        RequestError::Backup { source: StorageError::Snapshot { .. }, .. } => Status::failed_precondition(message),
        RequestError::View { source, .. } if source.is_transient() => Status::unavailable(message),
        RequestError::Backup { source, .. } if source.is_transient() => Status::unavailable(message),
        RequestError::View { source, .. } if matches!(**source, StorageError::Corruption { .. }) => {
            Status::data_loss(message)
        }
        RequestError::View { .. } | RequestError::Backup { .. } => Status::internal(message),
    }
}

/// `RESOURCE_EXHAUSTED`: the server already serves its most change feeds.
pub fn feeds_exhausted(node: u64, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "node {node} serves its most change feeds ({max}); retry after a backoff, or subscribe at another node"
    ))
}

/// `UNAVAILABLE`: a change feed ends because its server shuts down.
pub fn feed_closed(node: u64) -> Status {
    Status::unavailable(format!(
        "node {node} is shutting down its API; resume the feed from the last cursor at another node"
    ))
}

/// The status of a read the ledger refused.
pub fn query_error(error: &QueryError) -> Status {
    let message = error.to_string();
    match error {
        QueryError::InvalidField { .. } => Status::invalid_argument(message),
        QueryError::AccountNotFound(_) | QueryError::LedgerNotFound(_) => Status::not_found(message),
        QueryError::AccountHasNoHistory(_) => Status::failed_precondition(message),
        QueryError::Overflow { .. } => Status::out_of_range(message),
        QueryError::Store(error) => store_error(error),
    }
}

/// The status of a store failure met while reading.
pub fn store_error(error: &StoreError) -> Status {
    match error {
        StoreError::Corruption { .. } => Status::data_loss(error.to_string()),
        StoreError::Inconsistent { .. } | StoreError::Backend { .. } => Status::internal(error.to_string()),
    }
}

/// `INTERNAL`: the node answered something the API cannot use (a bug).
pub fn internal(what: impl Into<String>) -> Status {
    Status::internal(what.into())
}

/// Whether a client may send the same request again (to the same node or
/// to the leader it names, after a backoff for `RESOURCE_EXHAUSTED`).
pub fn is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

/// The leader's client address a status names, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?;
    value.to_str().ok().filter(|address| !address.is_empty()).map(str::to_owned)
}

/// The request's `grpc-timeout` header, as a duration (`None` when absent or
/// malformed: the server's own bound applies).
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit = text.chars().last()?;
    let digits = text.get(..text.len() - unit.len_utf8())?;
    // At most 8 digits, as the gRPC spec says.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    match unit {
        'H' => Some(Duration::from_secs(value.saturating_mul(3_600))),
        'M' => Some(Duration::from_secs(value.saturating_mul(60))),
        'S' => Some(Duration::from_secs(value)),
        'm' => Some(Duration::from_millis(value)),
        'u' => Some(Duration::from_micros(value)),
        'n' => Some(Duration::from_nanos(value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address_of(node: u64) -> Option<String> {
        (node == 2).then(|| "127.0.0.1:7002".to_owned())
    }

    #[test]
    fn not_leader_names_the_leaders_address_in_message_and_metadata() {
        let error = RequestError::Proposal(ProposalError::NotLeader { leader: Some(2) });
        let status = request_error(1, &error, address_of, &[]);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("127.0.0.1:7002"), "{}", status.message());
        assert_eq!(leader_hint(&status).as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(status.metadata().get(LEADER_ID_METADATA_KEY).and_then(|v| v.to_str().ok()), Some("2"));
    }

    #[test]
    fn an_unknown_leader_gives_no_hint() {
        let status = request_error(1, &RequestError::Read(ReadError::NotLeader { leader: None }), address_of, &[]);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(leader_hint(&status), None);
        let status =
            request_error(1, &RequestError::Proposal(ProposalError::NotLeader { leader: Some(3) }), address_of, &[]);
        assert_eq!(leader_hint(&status), None);
        assert!(status.message().contains("node 3"), "{}", status.message());
    }

    #[test]
    fn a_standby_refusing_a_write_names_the_primary_regions_nodes() {
        let error = RequestError::Proposal(ProposalError::NotWritable { standby: true, epoch: 2 });
        let primary = ["10.2.0.1:7101".to_owned(), "10.2.0.2:7101".to_owned()];
        let status = request_error(1, &error, address_of, &primary);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().ends_with("(its nodes: 10.2.0.1:7101, 10.2.0.2:7101)"), "{}", status.message());
        // A frozen primary is no standby: retry shortly, here or there.
        let frozen = RequestError::Proposal(ProposalError::NotWritable { standby: false, epoch: 2 });
        assert!(!request_error(1, &frozen, address_of, &primary).message().contains("its nodes"));
    }

    #[test]
    fn each_failure_maps_to_its_code() {
        let cases = [
            (RequestError::Overloaded { node: 1, capacity: 4 }, Code::ResourceExhausted),
            (
                RequestError::Proposal(ProposalError::Overloaded { queued: 1, max: 1, unit: "events" }),
                Code::ResourceExhausted,
            ),
            (RequestError::Read(ReadError::Overloaded { queued: 1, max: 1 }), Code::ResourceExhausted),
            (RequestError::Proposal(ProposalError::LeadershipLost), Code::Unavailable),
            (RequestError::Proposal(ProposalError::Dropped { reason: "transfer" }), Code::Unavailable),
            (RequestError::Read(ReadError::Timeout { attempts: 3 }), Code::Unavailable),
            (RequestError::Stopped { node: 1, reason: "shut down".into() }, Code::Unavailable),
            (RequestError::Proposal(ProposalError::TooLarge { events: 9_000, max: 8_189 }), Code::InvalidArgument),
            (RequestError::Invalid { field: "address", reason: "bad".into() }, Code::InvalidArgument),
            (RequestError::Proposal(ProposalError::ConfChangePending), Code::Aborted),
            (
                RequestError::Proposal(ProposalError::NotCaughtUp { target: 2, matched: 1, last_index: 9 }),
                Code::FailedPrecondition,
            ),
            (RequestError::Abandoned { node: 1 }, Code::Internal),
        ];
        for (error, code) in cases {
            let status = request_error(1, &error, address_of, &[]);
            assert_eq!(status.code(), code, "{error}");
            // A stopped node cannot serve the retry, but another node can.
            if !matches!(error, RequestError::Stopped { .. }) {
                assert_eq!(is_retryable(status.code()), error.is_retryable(), "{error}");
            }
        }
    }

    #[test]
    fn query_errors_map_to_their_codes() {
        use coffer_ledger::AccountId;
        assert_eq!(query_error(&QueryError::AccountNotFound(AccountId(1))).code(), Code::NotFound);
        assert_eq!(query_error(&QueryError::AccountHasNoHistory(AccountId(1))).code(), Code::FailedPrecondition);
        let corrupt = StoreError::Corruption { table: "accounts".into(), key: "01".into(), reason: "crc".into() };
        assert_eq!(query_error(&QueryError::Store(corrupt)).code(), Code::DataLoss);
        let invalid = QueryError::InvalidField { field: "limit", reason: "0".into() };
        assert_eq!(query_error(&invalid).code(), Code::InvalidArgument);
    }

    #[test]
    fn field_errors_are_invalid_arguments_naming_the_field() {
        let status = Status::from(FieldError::new("transfers[3].amount", "12.5 has more decimal places"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "transfers[3].amount: 12.5 has more decimal places");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (text, duration) in [
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3_600)),
            ("700u", Duration::from_micros(700)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            metadata.insert("grpc-timeout", MetadataValue::try_from(text).unwrap());
            assert_eq!(grpc_timeout(&metadata), Some(duration), "{text}");
        }
        for text in ["", "S", "123456789S", "5x", "-5S"] {
            metadata.insert("grpc-timeout", MetadataValue::try_from(text).unwrap());
            assert_eq!(grpc_timeout(&metadata), None, "{text:?}");
        }
    }
}
