//! The endpoint's routing, the `[telemetry]` keys, and the host-metric
//! names against the semantic conventions.

use std::path::Path;
use std::time::Duration;

use super::http::{Route, route};
use super::names;
use crate::ControllerConfig;

#[test]
fn only_get_metrics_is_served() {
    let cases: [(&[u8], Route); 8] = [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Route::Metrics),
        (b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n", Route::Metrics),
        (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
        (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
        (b"GET /metrics/../etc HTTP/1.1\r\n\r\n", Route::NotFound),
        (b"GET /metrics\r\n\r\n", Route::BadRequest),
        (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
    ];
    for (head, expected) in cases {
        assert_eq!(route(head), expected, "{:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn host_metric_names_are_the_semantic_conventions() {
    use opentelemetry_semantic_conventions::{attribute as a, metric as m};
    let pairs = [
        (names::CPU_UTILIZATION, m::SYSTEM_CPU_UTILIZATION),
        (names::MEMORY_USAGE, m::SYSTEM_MEMORY_USAGE),
        (names::MEMORY_LIMIT, m::SYSTEM_MEMORY_LIMIT),
        (names::MEMORY_UTILIZATION, m::SYSTEM_MEMORY_UTILIZATION),
        (names::PAGING_USAGE, m::SYSTEM_PAGING_USAGE),
        (names::PAGING_UTILIZATION, m::SYSTEM_PAGING_UTILIZATION),
        (names::UPTIME, m::SYSTEM_UPTIME),
        (names::FILESYSTEM_USAGE, m::SYSTEM_FILESYSTEM_USAGE),
        (names::FILESYSTEM_LIMIT, m::SYSTEM_FILESYSTEM_LIMIT),
        (
            names::FILESYSTEM_UTILIZATION,
            m::SYSTEM_FILESYSTEM_UTILIZATION,
        ),
        (names::NETWORK_IO, m::SYSTEM_NETWORK_IO),
        (names::NETWORK_PACKET_COUNT, m::SYSTEM_NETWORK_PACKET_COUNT),
        (names::NETWORK_ERRORS, m::SYSTEM_NETWORK_ERRORS),
        (names::HW_TEMPERATURE, m::HW_TEMPERATURE),
        (names::MEMORY_STATE, a::SYSTEM_MEMORY_STATE),
        (names::PAGING_STATE, a::SYSTEM_PAGING_STATE),
        (names::DEVICE, a::SYSTEM_DEVICE),
        (
            names::FILESYSTEM_MOUNTPOINT,
            a::SYSTEM_FILESYSTEM_MOUNTPOINT,
        ),
        (names::FILESYSTEM_TYPE, a::SYSTEM_FILESYSTEM_TYPE),
        (names::FILESYSTEM_STATE, a::SYSTEM_FILESYSTEM_STATE),
        (names::INTERFACE, a::NETWORK_INTERFACE_NAME),
        (names::DIRECTION, a::NETWORK_IO_DIRECTION),
        (names::HW_ID, a::HW_ID),
        (names::HW_TYPE, a::HW_TYPE),
    ];
    for (ours, convention) in pairs {
        assert_eq!(ours, convention);
    }
}

const BASE: &str = "node_id = 1\nlisten = \"127.0.0.1:7401\"\ndata_dir = \"data\"\n\
    [tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n\
    [cluster]\npeers = { 1 = \"127.0.0.1:7401\" }\n";

fn load(dir: &Path, telemetry: &str) -> Result<ControllerConfig, String> {
    let path = dir.join("controller.toml");
    std::fs::write(&path, format!("{BASE}{telemetry}")).expect("write controller.toml");
    ControllerConfig::load(&path).map_err(|e| e.to_string())
}

#[test]
fn telemetry_keys_are_validated_and_header_values_never_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let off = load(dir.path(), "").expect("no [telemetry]");
    assert_eq!(off.telemetry.otlp_endpoint, None);
    assert_eq!(off.telemetry.otlp_interval, Duration::from_secs(10));

    let on = load(
        dir.path(),
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\n\
         otlp_headers = { Authorization = \"Bearer s3cr3t-token\" }\notlp_interval = \"2s\"\n",
    )
    .expect("a valid [telemetry]");
    assert_eq!(
        on.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(on.telemetry.otlp_interval, Duration::from_secs(2));
    assert_eq!(
        on.telemetry
            .otlp_headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer s3cr3t-token")
    );
    let shown = format!("{on:?}");
    assert!(shown.contains("authorization"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "a header value leaked: {shown}");

    for (telemetry, expected) in [
        (
            "[telemetry]\notlp_endpoint = \"https://collector:4317\"\n",
            "not an http:// URI",
        ),
        (
            "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
            "not an http:// URI",
        ),
        (
            "[telemetry]\notlp_interval = \"5s\"\n",
            "need otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://c:4317\"\notlp_interval = \"1ms\"\n",
            "out of range",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://c:4317\"\notlp_headers = { \"a b\" = \"x\" }\n",
            "not a gRPC header name",
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://c:4317\"\notlp_headers = { a = \"s3cr3t\\n\" }\n",
            "must be visible ASCII",
        ),
        (
            "[telemetry]\nmetrics_listen = \"127.0.0.1:9464\"\n",
            "unknown field",
        ),
    ] {
        let error = load(dir.path(), telemetry).expect_err(telemetry);
        assert!(error.contains(expected), "{telemetry}: {error}");
        assert!(!error.contains("s3cr3t"), "a header value leaked: {error}");
        assert!(error.contains("controller.toml:"), "located: {error}");
    }
}
