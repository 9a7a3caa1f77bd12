//! Counters of refused input. They are plain atomics so that the request
//! path never waits on instrumentation; the metrics exporter reads them.

use std::sync::atomic::{AtomicU64, Ordering};

use leitstand_proto::identity::CertificateInvalid;

/// Why the controller refused something a peer sent after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A certificate of the wrong kind for the service called.
    WrongKind,
    /// The agent id in Hello differs from the certificate's.
    IdentityMismatch,
    /// A message outside the contract's bounds, or undecodable bytes.
    InvalidMessage,
    /// A message larger than the service's limit.
    Oversized,
    /// More messages per second than a session may send.
    RateLimited,
    /// A second Hello on one stream.
    DuplicateHello,
    /// The first message was not a Hello, or did not come in time.
    HelloMissing,
    /// A new agent beyond the controller's agent limit.
    TooManyAgents,
    /// A request, or an open stream, whose certificate a CRL loaded after
    /// the handshake revokes.
    CertificateRevoked,
    /// A request, or an open stream, whose certificate's notAfter passed
    /// after the handshake.
    CertificateExpired,
    /// A Raft batch whose `from` differs from the node id in the sending
    /// controller's certificate, or a controller certificate whose name is
    /// no node id.
    NodeMismatch,
    /// An agent that read no answer for the send timeout.
    Unresponsive,
    /// An operator call the caller's role does not allow.
    PermissionDenied,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::WrongKind,
        Rejection::IdentityMismatch,
        Rejection::InvalidMessage,
        Rejection::Oversized,
        Rejection::RateLimited,
        Rejection::DuplicateHello,
        Rejection::HelloMissing,
        Rejection::TooManyAgents,
        Rejection::CertificateRevoked,
        Rejection::CertificateExpired,
        Rejection::NodeMismatch,
        Rejection::Unresponsive,
        Rejection::PermissionDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::WrongKind => "wrong_certificate_kind",
            Rejection::IdentityMismatch => "identity_mismatch",
            Rejection::InvalidMessage => "invalid_message",
            Rejection::Oversized => "oversized_message",
            Rejection::RateLimited => "rate_limited",
            Rejection::DuplicateHello => "duplicate_hello",
            Rejection::HelloMissing => "hello_missing",
            Rejection::TooManyAgents => "too_many_agents",
            Rejection::CertificateRevoked => "certificate_revoked",
            Rejection::CertificateExpired => "certificate_expired",
            Rejection::NodeMismatch => "node_identity_mismatch",
            Rejection::Unresponsive => "unresponsive",
            Rejection::PermissionDenied => "permission_denied",
        }
    }
}

impl From<&CertificateInvalid> for Rejection {
    fn from(invalid: &CertificateInvalid) -> Self {
        match invalid {
            CertificateInvalid::Revoked { .. } => Rejection::CertificateRevoked,
            CertificateInvalid::Expired { .. } => Rejection::CertificateExpired,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    rejected: [AtomicU64; Rejection::ALL.len()],
    pub(crate) reports_accepted: AtomicU64,
    pub(crate) reports_duplicate: AtomicU64,
    /// Observations the failover engine's full inbox dropped.
    pub(crate) observations_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rejected(&self, why: Rejection) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }
}
