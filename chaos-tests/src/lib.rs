//! leitstand-chaos: sandbox clusters of real processes, fault injection, the
//! invariant checker, drills (later) and the benchmarks behind
//! `leitstand bench NAME`.
#![forbid(unsafe_code)]

pub mod bench;
