//! The checked-in generated code must match what the .proto files generate.
//!
//! A normal build needs no protoc because `src/gen/` is checked in; this test
//! keeps it honest. After changing a .proto file, refresh the checked-in code
//! with `LEITSTAND_BLESS=1 cargo test -p leitstand-proto --test it codegen`.

use std::path::{Path, PathBuf};

const PROTOS: [&str; 4] = [
    "proto/leitstand/v1/common.proto",
    "proto/leitstand/v1/agent_gateway.proto",
    "proto/leitstand/v1/operator.proto",
    "proto/leitstand/v1/peer.proto",
];

fn generate_into(out_dir: &Path) {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| crate_dir.join(p)).collect();
    let includes = vec![crate_dir.join("proto")];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_with_config(config, &protos, &includes)
        .expect("protoc and tonic-prost-build generate the leitstand.v1 code");
}

#[test]
fn checked_in_code_matches_the_proto_files() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let checked_in_path = crate_dir.join("src/gen/leitstand.v1.rs");
    let scratch = tempfile::tempdir().expect("temporary directory");
    generate_into(scratch.path());
    let fresh = std::fs::read_to_string(scratch.path().join("leitstand.v1.rs"))
        .expect("generator wrote leitstand.v1.rs");

    if std::env::var_os("LEITSTAND_BLESS").is_some() {
        std::fs::write(&checked_in_path, &fresh).expect("write the checked-in code");
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is out of date with the .proto files; run \
         `LEITSTAND_BLESS=1 cargo test -p leitstand-proto --test it codegen` and commit the result",
        checked_in_path.display()
    );
}
