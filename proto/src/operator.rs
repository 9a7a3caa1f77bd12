//! The Operator API's leader-following contract, shared by the controller
//! (which answers writes on a follower with [`not_leader`]) and clients
//! (which read the hint back with [`leader_hint`] and retry there).

use prost::Message as _;

use crate::v1::NotLeader;

/// The status a follower answers an operator write with: FAILED_PRECONDITION,
/// an encoded [`NotLeader`] in the details, and a message a person can read.
pub fn not_leader(leader_id: Option<u64>, leader_address: Option<&str>) -> tonic::Status {
    let message = match (leader_id, leader_address) {
        (Some(id), Some(address)) => format!("not leader; leader at {address} (node {id})"),
        (Some(id), None) => format!("not leader; leader is node {id}, address unknown"),
        _ => "not leader; no leader known (an election may be under way, or this node is cut off from the majority)".to_string(),
    };
    let details = NotLeader {
        leader_id: leader_id.unwrap_or(0),
        leader_hint: leader_address.unwrap_or_default().to_string(),
    }
    .encode_to_vec();
    tonic::Status::with_details(tonic::Code::FailedPrecondition, message, details.into())
}

/// Where a [`not_leader`] status says the leader is: `None` if `status` is
/// not one; `Some(hint)` with an empty address when the follower knew none.
pub fn leader_hint(status: &tonic::Status) -> Option<NotLeader> {
    if status.code() != tonic::Code::FailedPrecondition
        || !status.message().starts_with("not leader")
    {
        return None;
    }
    let hint = NotLeader::decode(status.details()).ok()?;
    // The address goes into a dial: bound it as the contract does.
    if hint.leader_hint.len() > crate::domain::bounds::MAX_ADDRESS_BYTES {
        return Some(NotLeader {
            leader_id: hint.leader_id,
            leader_hint: String::new(),
        });
    }
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_leader_status_round_trips() {
        let status = not_leader(Some(2), Some("127.0.0.1:7402"));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("127.0.0.1:7402"),
            "{}",
            status.message()
        );
        let hint = leader_hint(&status).expect("a not-leader status");
        assert_eq!(hint.leader_id, 2);
        assert_eq!(hint.leader_hint, "127.0.0.1:7402");

        let unknown = leader_hint(&not_leader(None, None)).expect("a not-leader status");
        assert_eq!((unknown.leader_id, unknown.leader_hint.as_str()), (0, ""));

        let other = tonic::Status::failed_precondition("a membership change is in progress");
        assert!(leader_hint(&other).is_none());
    }
}
