//! leitstand-tui: the operator's side of the Operator API. Today:
//! operator.toml ([`OperatorConfig`]), the leader-following client
//! ([`OperatorClient`]) and the cluster view the command line prints
//! ([`ClusterStatus`]). *(Later:)* the ratatui dashboard.
//!
//! All network work goes through [`OperatorClient`], so the dashboard and
//! the command-line twins follow the leader the same way.
#![forbid(unsafe_code)]

mod client;
mod cluster;
mod config;
mod error;

pub use client::OperatorClient;
pub use cluster::{ClusterStatus, Member, Probe, Role};
pub use config::OperatorConfig;
pub use error::{Error, Tried};
