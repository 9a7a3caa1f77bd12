//! leitstand-chaos: sandbox clusters of real processes, fault injection, the
//! invariant checker and drills. Arrives with the chaos issue; nothing here yet.
#![forbid(unsafe_code)]
