//! The controller cluster as an operator sees it: validated from the wire
//! (`TryFrom<v1::ClusterStatusReply>`), printed as a table a person can
//! read at 3 a.m., or as JSON whose shape is ours, not protobuf's, so that
//! scripts keep working when the wire contract grows.

use std::fmt::Write as _;

use leitstand_proto::domain::bounds::{MAX_ADDRESS_BYTES, MAX_MEMBERS};
use leitstand_proto::domain::{InvalidMessage, NodeId};
use leitstand_proto::v1;
use serde::Serialize;

/// One answer to ClusterStatus (and to every membership change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The node that answered.
    #[serde(serialize_with = "node_id")]
    pub answered_by: NodeId,
    /// False: the answering node's own view, which no quorum confirmed.
    pub confirmed_by_quorum: bool,
    /// `None` when no leader is known.
    #[serde(serialize_with = "optional_node_id")]
    pub leader_id: Option<NodeId>,
    /// The leader's address, when the leader is a listed member.
    pub leader_address: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// True while a membership change is half done.
    pub joint_configuration: bool,
    /// Ordered by node id.
    pub members: Vec<Member>,
}

/// One controller of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    #[serde(serialize_with = "node_id")]
    pub node_id: NodeId,
    pub address: String,
    pub role: Role,
    /// A voter of the (incoming) configuration.
    pub voter: bool,
    /// A voter of the outgoing configuration during a membership change.
    pub outgoing_voter: bool,
    /// Replication figures are the leader's knowledge: `None` when another
    /// node answered.
    pub match_index: Option<u64>,
    pub lag: Option<u64>,
    /// `None` when unknown (or when another node than the leader answered).
    pub last_contact_ms_ago: Option<u64>,
    /// The leader is sending it a snapshot, or probing where its log ends.
    pub catching_up: bool,
}

/// What a member does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    /// Receives the log but does not vote.
    Learner,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
        }
    }
}

fn node_id<S: serde::Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(id.get())
}

fn optional_node_id<S: serde::Serializer>(id: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_some(&id.get()),
        None => s.serialize_none(),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidMessage {
    InvalidMessage {
        field: field.into(),
        reason: reason.into(),
    }
}

impl TryFrom<v1::ClusterStatusReply> for ClusterStatus {
    type Error = InvalidMessage;

    fn try_from(reply: v1::ClusterStatusReply) -> Result<Self, InvalidMessage> {
        let answered_by = NodeId::new(reply.answered_by)
            .ok_or_else(|| invalid("answered_by", "must be a node id (1 or more)"))?;
        if reply.members.len() > MAX_MEMBERS {
            return Err(invalid(
                "members",
                format!(
                    "{} members; a cluster has at most {MAX_MEMBERS}",
                    reply.members.len()
                ),
            ));
        }
        let leader_id = NodeId::new(reply.leader_id);
        let leader_answered = leader_id == Some(answered_by);
        let mut members: Vec<Member> = Vec::with_capacity(reply.members.len());
        for (i, m) in reply.members.into_iter().enumerate() {
            let field = |name: &str| format!("members[{i}].{name}");
            let id = NodeId::new(m.node_id)
                .ok_or_else(|| invalid(field("node_id"), "must be 1 or more"))?;
            if members.iter().any(|other| other.node_id == id) {
                return Err(invalid(
                    field("node_id"),
                    format!("node {id} is listed twice"),
                ));
            }
            if m.address.len() > MAX_ADDRESS_BYTES {
                return Err(invalid(
                    field("address"),
                    format!("longer than {MAX_ADDRESS_BYTES} bytes"),
                ));
            }
            let role = if Some(id) == leader_id {
                Role::Leader
            } else if m.voter || m.outgoing_voter {
                Role::Follower
            } else {
                Role::Learner
            };
            members.push(Member {
                node_id: id,
                address: m.address,
                role,
                voter: m.voter,
                outgoing_voter: m.outgoing_voter,
                match_index: leader_answered.then_some(m.match_index),
                lag: leader_answered.then_some(m.lag),
                last_contact_ms_ago: leader_answered
                    .then(|| u64::try_from(m.last_contact_ms_ago).ok())
                    .flatten(),
                catching_up: m.catching_up,
            });
        }
        members.sort_by_key(|m| m.node_id);
        let leader_address = members
            .iter()
            .find(|m| m.role == Role::Leader)
            .map(|m| m.address.clone());
        Ok(ClusterStatus {
            answered_by,
            confirmed_by_quorum: reply.confirmed_by_quorum,
            leader_id,
            leader_address,
            term: reply.term,
            commit_index: reply.commit_index,
            applied_index: reply.applied_index,
            first_index: reply.first_index,
            last_index: reply.last_index,
            snapshot_index: reply.snapshot_index,
            joint_configuration: reply.joint_configuration,
            members,
        })
    }
}

impl ClusterStatus {
    /// Pretty-printed JSON with the field names of these structs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("a ClusterStatus has only strings, numbers and booleans, which always encode")
    }

    /// The plain-text view: a summary, then one row per member.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        if !self.confirmed_by_quorum {
            line(format!(
                "WARNING: this is node {}'s own view; no quorum confirmed it — the node may be cut off from the majority",
                self.answered_by
            ));
        }
        line(format!("answered by  node {}", self.answered_by));
        line(format!(
            "leader       {}",
            match (self.leader_id, &self.leader_address) {
                (Some(id), Some(address)) => format!("node {id} ({address})"),
                (Some(id), None) => format!("node {id} (not in the member list)"),
                (None, _) => "none known (an election may be under way)".to_owned(),
            }
        ));
        line(format!("term         {}", self.term));
        line(format!(
            "commit       {}, applied {}",
            self.commit_index, self.applied_index
        ));
        line(format!(
            "log          first {}, last {}, snapshot at {}",
            self.first_index, self.last_index, self.snapshot_index
        ));
        line(format!(
            "membership   {}",
            if self.joint_configuration {
                "changing (joint configuration: a membership change is half done)"
            } else {
                "stable"
            }
        ));
        line(String::new());

        let mut rows = vec![
            [
                "NODE",
                "ADDRESS",
                "ROLE",
                "VOTES",
                "MATCH",
                "LAG",
                "LAST CONTACT",
                "CATCHING UP",
            ]
            .map(str::to_owned),
        ];
        for m in &self.members {
            let known = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            rows.push([
                m.node_id.to_string(),
                m.address.clone(),
                m.role.as_str().to_owned(),
                votes(m.voter, m.outgoing_voter, self.joint_configuration).to_owned(),
                known(m.match_index),
                known(m.lag),
                match (m.role, m.last_contact_ms_ago) {
                    (Role::Leader, _) => "-".to_owned(),
                    (_, Some(ms)) => ago(ms),
                    (_, None) => "unknown".to_owned(),
                },
                if m.catching_up { "yes" } else { "no" }.to_owned(),
            ]);
        }
        for row in table(&rows) {
            line(row);
        }
        if self.leader_id != Some(self.answered_by) && !self.members.is_empty() {
            line(String::new());
            line(format!(
                "Match index, lag and last contact are known only to the leader; node {} answered.",
                self.answered_by
            ));
        }
        out
    }
}

fn votes(voter: bool, outgoing: bool, joint: bool) -> &'static str {
    match (voter, outgoing) {
        (true, true) => "voter (old and new configuration)",
        (true, false) if joint => "voter (new configuration)",
        (true, false) => "voter",
        (false, true) => "outgoing voter (leaving)",
        (false, false) => "no",
    }
}

/// "0.1 s ago", "42 s ago", "12 min ago", "3 h ago".
fn ago(ms: u64) -> String {
    let seconds = ms as f64 / 1000.0;
    if ms < 10_000 {
        format!("{seconds:.1} s ago")
    } else if ms < 120_000 {
        format!("{} s ago", ms / 1000)
    } else if ms < 2 * 3_600_000 {
        format!("{} min ago", ms / 60_000)
    } else {
        format!("{} h ago", ms / 3_600_000)
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut text = String::new();
            for (cell, width) in row.iter().zip(widths) {
                let _ = write!(text, "{cell:<width$}  ");
            }
            text.trim_end().to_owned()
        })
        .collect()
}

/// A probe entry committed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Raft log index at which the probe was applied.
    pub committed_index: u64,
    #[serde(serialize_with = "node_id")]
    pub leader_id: NodeId,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

impl TryFrom<v1::ProbeReply> for Probe {
    type Error = InvalidMessage;

    fn try_from(reply: v1::ProbeReply) -> Result<Self, InvalidMessage> {
        let leader_id = NodeId::new(reply.leader_id)
            .ok_or_else(|| invalid("leader_id", "must be a node id (1 or more)"))?;
        if reply.payload.len() > 64 {
            return Err(invalid("payload", "longer than 64 bytes"));
        }
        Ok(Probe {
            committed_index: reply.committed_index,
            leader_id,
            payload: reply.payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, voter: bool, outgoing: bool) -> v1::Member {
        v1::Member {
            node_id: id,
            address: format!("127.0.0.1:740{id}"),
            voter,
            match_index: 120 - 10 * (id - 1),
            lag: 10 * (id - 1),
            last_contact_ms_ago: if id == 3 { -1 } else { 100 * id as i64 },
            outgoing_voter: outgoing,
            catching_up: id == 4,
        }
    }

    fn reply(answered_by: u64, leader: u64, quorum: bool) -> v1::ClusterStatusReply {
        v1::ClusterStatusReply {
            members: vec![
                member(2, true, false),
                member(1, true, false),
                member(3, true, false),
            ],
            leader_id: leader,
            term: 3,
            commit_index: 120,
            applied_index: 119,
            answered_by,
            confirmed_by_quorum: quorum,
            joint_configuration: false,
            snapshot_index: 100,
            first_index: 101,
            state_digest: String::new(),
            digest_applied_index: 0,
            last_index: 120,
        }
    }

    fn check_text(reply: v1::ClusterStatusReply, expected: &str) {
        let status = ClusterStatus::try_from(reply).expect("a valid reply");
        let text = status.to_text();
        assert_eq!(
            text, expected,
            "\n--- got ---\n{text}\n--- expected ---\n{expected}"
        );
    }

    #[test]
    fn the_leaders_view_as_a_table() {
        check_text(
            reply(1, 1, true),
            "\
answered by  node 1
leader       node 1 (127.0.0.1:7401)
term         3
commit       120, applied 119
log          first 101, last 120, snapshot at 100
membership   stable

NODE  ADDRESS         ROLE      VOTES  MATCH  LAG  LAST CONTACT  CATCHING UP
1     127.0.0.1:7401  leader    voter  120    0    -             no
2     127.0.0.1:7402  follower  voter  110    10   0.2 s ago     no
3     127.0.0.1:7403  follower  voter  100    20   unknown       no
",
        );
    }

    #[test]
    fn an_unconfirmed_view_of_a_follower_says_so() {
        check_text(
            reply(2, 0, false),
            "\
WARNING: this is node 2's own view; no quorum confirmed it — the node may be cut off from the majority
answered by  node 2
leader       none known (an election may be under way)
term         3
commit       120, applied 119
log          first 101, last 120, snapshot at 100
membership   stable

NODE  ADDRESS         ROLE      VOTES  MATCH  LAG  LAST CONTACT  CATCHING UP
1     127.0.0.1:7401  follower  voter  -      -    unknown       no
2     127.0.0.1:7402  follower  voter  -      -    unknown       no
3     127.0.0.1:7403  follower  voter  -      -    unknown       no

Match index, lag and last contact are known only to the leader; node 2 answered.
",
        );
    }

    #[test]
    fn a_joint_configuration_shows_old_and_new_voters_and_the_learner() {
        let mut joint = reply(1, 1, true);
        joint.joint_configuration = true;
        joint.members = vec![
            member(1, true, true),
            member(2, true, true),
            member(3, false, true),
            member(4, true, false),
            member(5, false, false),
        ];
        joint.members[4].last_contact_ms_ago = 754_000;
        check_text(
            joint,
            "\
answered by  node 1
leader       node 1 (127.0.0.1:7401)
term         3
commit       120, applied 119
log          first 101, last 120, snapshot at 100
membership   changing (joint configuration: a membership change is half done)

NODE  ADDRESS         ROLE      VOTES                              MATCH  LAG  LAST CONTACT  CATCHING UP
1     127.0.0.1:7401  leader    voter (old and new configuration)  120    0    -             no
2     127.0.0.1:7402  follower  voter (old and new configuration)  110    10   0.2 s ago     no
3     127.0.0.1:7403  follower  outgoing voter (leaving)           100    20   unknown       no
4     127.0.0.1:7404  follower  voter (new configuration)          90     30   0.4 s ago     yes
5     127.0.0.1:7405  learner   no                                 80     40   12 min ago    no
",
        );
    }

    #[test]
    fn last_contact_reads_as_a_person_says_it() {
        for (ms, expected) in [
            (0, "0.0 s ago"),
            (100, "0.1 s ago"),
            (9_949, "9.9 s ago"),
            (42_000, "42 s ago"),
            (119_999, "119 s ago"),
            (754_000, "12 min ago"),
            (3 * 3_600_000, "3 h ago"),
        ] {
            assert_eq!(ago(ms), expected, "{ms} ms");
        }
    }

    #[test]
    fn json_has_our_field_names_and_nulls_for_the_unknown() {
        let status = ClusterStatus::try_from(reply(1, 1, true)).expect("a valid reply");
        let json: serde_json::Value = serde_json::from_str(&status.to_json()).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "answered_by": 1,
                "confirmed_by_quorum": true,
                "leader_id": 1,
                "leader_address": "127.0.0.1:7401",
                "term": 3,
                "commit_index": 120,
                "applied_index": 119,
                "first_index": 101,
                "last_index": 120,
                "snapshot_index": 100,
                "joint_configuration": false,
                "members": [
                    {"node_id": 1, "address": "127.0.0.1:7401", "role": "leader", "voter": true,
                     "outgoing_voter": false, "match_index": 120, "lag": 0,
                     "last_contact_ms_ago": 100, "catching_up": false},
                    {"node_id": 2, "address": "127.0.0.1:7402", "role": "follower", "voter": true,
                     "outgoing_voter": false, "match_index": 110, "lag": 10,
                     "last_contact_ms_ago": 200, "catching_up": false},
                    {"node_id": 3, "address": "127.0.0.1:7403", "role": "follower", "voter": true,
                     "outgoing_voter": false, "match_index": 100, "lag": 20,
                     "last_contact_ms_ago": null, "catching_up": false},
                ]
            })
        );

        let follower = ClusterStatus::try_from(reply(2, 0, false)).expect("a valid reply");
        let json: serde_json::Value =
            serde_json::from_str(&follower.to_json()).expect("valid JSON");
        assert_eq!(json["leader_id"], serde_json::Value::Null);
        assert_eq!(json["confirmed_by_quorum"], false);
        assert_eq!(json["members"][0]["match_index"], serde_json::Value::Null);
    }

    #[test]
    fn replies_out_of_bounds_are_refused_with_the_field() {
        type Spoil = Box<dyn Fn(&mut v1::ClusterStatusReply)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|r| r.answered_by = 0), "answered_by"),
            (Box::new(|r| r.members[1].node_id = 0), "members[1].node_id"),
            (Box::new(|r| r.members[2].node_id = 2), "members[2].node_id"),
            (
                Box::new(|r| r.members[0].address = "a".repeat(257)),
                "members[0].address",
            ),
            (
                Box::new(|r| r.members = (1..=10).map(|i| member(i, true, false)).collect()),
                "members",
            ),
        ];
        for (spoil, field) in cases {
            let mut bad = reply(1, 1, true);
            spoil(&mut bad);
            let err = ClusterStatus::try_from(bad).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }
}
