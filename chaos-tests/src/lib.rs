//! leitstand-chaos: sandbox clusters of real processes, fault injection, the
//! invariant checker, the drills behind `leitstand drill` and the benchmarks
//! behind `leitstand bench NAME`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod drill;
mod invariants;
pub mod proxy;
mod sandbox;
mod scenarios;
