//! Integration tests of the lean `leitstand-agent` binary.

mod binary;
