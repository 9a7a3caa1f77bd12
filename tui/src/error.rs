//! What goes wrong talking to the controllers, in words an operator on
//! call can act on.

use std::fmt;
use std::time::Duration;

/// Every failure of the operator client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in operator.toml, located by file, line and column.
    #[error(transparent)]
    Config(leitstand_proto::Error),
    #[error("cannot load the operator's TLS material")]
    Tls(#[source] leitstand_proto::Error),
    #[error(
        "{} holds {identity}, not an operator certificate; issue one with `leitstand pki issue --kind operator --name <your name>`",
        cert.display()
    )]
    NotAnOperator {
        cert: std::path::PathBuf,
        identity: String,
    },
    /// A request the command line refused before sending it.
    #[error("{0}")]
    Usage(String),
    /// Every controller was tried; none could answer.
    #[error("no controller answered: {tried}")]
    Unreachable { tried: Tried },
    /// The overall deadline passed while controllers were still being tried.
    #[error("no answer within {}: {tried}", seconds(*deadline))]
    Deadline { deadline: Duration, tried: Tried },
    /// A change was sent to the leader, which did not answer in time; it
    /// may still be applied.
    #[error(
        "{address} did not confirm the change within {}; it may still take effect: check `leitstand cluster status`",
        seconds(*waited)
    )]
    Unconfirmed { address: String, waited: Duration },
    #[error(
        "{address} refused: {message}; your operator certificate's name ({operator}) has no role that allows this; ask an admin to add it to [rbac] in controller.toml"
    )]
    PermissionDenied {
        address: String,
        operator: String,
        message: String,
    },
    #[error("{address} did not accept your certificate: {message}")]
    Unauthenticated { address: String, message: String },
    #[error("{address} rejected the request: {message}")]
    InvalidArgument { address: String, message: String },
    /// FAILED_PRECONDITION other than "not leader", e.g. a membership
    /// change already in progress.
    #[error("the cluster cannot do this now: {message} (answered by {address})")]
    Precondition { address: String, message: String },
    #[error("{address} answered with an invalid reply: {reason}")]
    BadReply { address: String, reason: String },
    /// The controller predates this call (UNIMPLEMENTED).
    #[error("this controller ({address}) does not offer {rpc} yet: upgrade it")]
    Unimplemented { address: String, rpc: &'static str },
    /// Any other gRPC status.
    #[error("{address} failed the request: {message} ({code:?})")]
    Rpc {
        address: String,
        code: tonic::Code,
        message: String,
    },
}

impl Error {
    /// The process exit status for this error (DESIGN.md §9): 2 for
    /// mistakes in the configuration or the request, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_)
            | Error::Tls(_)
            | Error::NotAnOperator { .. }
            | Error::Usage(_)
            | Error::InvalidArgument { .. } => 2,
            _ => 1,
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The controllers a call tried, in order, each with what happened there.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tried(Vec<(String, String)>);

impl Tried {
    pub(crate) fn push(&mut self, address: &str, outcome: impl Into<String>) {
        self.0.push((address.to_owned(), outcome.into()));
    }

    /// Each address with its outcome, in the order tried.
    pub fn attempts(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Display for Tried {
    /// "tried A (connection refused), B (not leader; leader unknown)";
    /// an attempt repeated with the same outcome (retries during an
    /// election) is said once with its count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut seen: Vec<(&str, &str, usize)> = Vec::new();
        for (address, outcome) in &self.0 {
            match seen
                .iter_mut()
                .find(|(a, o, _)| a == address && o == outcome)
            {
                Some((_, _, count)) => *count += 1,
                None => seen.push((address, outcome, 1)),
            }
        }
        if seen.is_empty() {
            return f.write_str("tried nothing");
        }
        f.write_str("tried ")?;
        for (i, (address, outcome, count)) in seen.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{address} ({outcome}")?;
            if *count > 1 {
                write!(f, "; {count} times")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_says_each_address_and_outcome_once() {
        let mut tried = Tried::default();
        tried.push("127.0.0.1:7401", "connection refused");
        tried.push("127.0.0.1:7402", "not leader; leader unknown");
        tried.push("127.0.0.1:7401", "connection refused");
        tried.push("127.0.0.1:7402", "not leader; leader unknown");
        tried.push("127.0.0.1:7402", "not leader; leader at 127.0.0.1:7403");
        assert_eq!(
            tried.to_string(),
            "tried 127.0.0.1:7401 (connection refused; 2 times), \
             127.0.0.1:7402 (not leader; leader unknown; 2 times), \
             127.0.0.1:7402 (not leader; leader at 127.0.0.1:7403)"
        );
        assert_eq!(Tried::default().to_string(), "tried nothing");
    }
}
