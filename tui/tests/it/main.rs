//! The operator client against stand-in Operator servers over real mTLS on
//! loopback, with certificates made by the `pki` code.

mod client;
mod support;
