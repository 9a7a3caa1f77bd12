//! Integration tests of leitstand-controller: real sockets on loopback and
//! real certificates made by the pki code in temporary directories.

mod cluster;
mod handshake;
mod nodes;
mod reload;
mod revocation;
mod session;
mod support;
