//! Integration tests of leitstand-proto: one test binary (see STYLE.md).

mod codegen;
