//! leitstand-tui: the operator dashboard (ratatui) and its leader-following
//! client. Arrives with the dashboard issue; nothing here yet.
#![forbid(unsafe_code)]
