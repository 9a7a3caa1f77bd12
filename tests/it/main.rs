//! Tests of the `leitstand` binary as a user runs it: real processes, real
//! certificates, real sockets on loopback.

mod actions;
mod cli;
mod cluster;
mod deploy;
mod dev;
mod drill;
mod e2e;
mod failover;
mod logs;
mod manual;
mod metrics;
mod otlp;
mod pki;
mod runbook;
mod support;
