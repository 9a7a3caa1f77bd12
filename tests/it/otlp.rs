//! The OTLP exit: a controller process pushes to a gRPC receiver built
//! from the OTLP protobuf definitions (opentelemetry-proto), here in the
//! test; names, units, attributes, values and the configured header arrive,
//! and the header's value never reaches the log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use tonic::{Request, Response, Status};

use crate::metrics::Lab;
use crate::support::wait_until;

const TOKEN: &str = "Bearer otlp-test-secret-7f3a";

#[derive(Default, Clone)]
struct Receiver {
    /// Every metric received, with the resource's service name.
    metrics: Arc<Mutex<Vec<(String, Metric)>>>,
    authorization: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        if let Some(value) = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            self.authorization
                .lock()
                .expect("headers")
                .push(value.to_owned());
        }
        let mut metrics = self.metrics.lock().expect("metrics");
        for resource in request.into_inner().resource_metrics {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    metrics.push((service.clone(), metric));
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| match value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn number(value: &Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(v)) => *v,
        Some(number_data_point::Value::AsInt(v)) => *v as f64,
        None => f64::NAN,
    }
}

/// (attributes, value) of every number data point of `metric`.
fn points(metric: &Metric) -> Vec<(Vec<KeyValue>, f64)> {
    let data = match &metric.data {
        Some(metric::Data::Gauge(g)) => &g.data_points,
        Some(metric::Data::Sum(s)) => &s.data_points,
        _ => return Vec::new(),
    };
    data.iter()
        .map(|p| (p.attributes.clone(), number(&p.value)))
        .collect()
}

impl Receiver {
    /// The latest received metric named `name`.
    fn latest(&self, name: &str) -> Option<Metric> {
        self.metrics
            .lock()
            .expect("metrics")
            .iter()
            .rev()
            .find(|(_, m)| m.name == name)
            .map(|(_, m)| m.clone())
    }
}

#[test]
fn a_controller_pushes_its_metrics_over_otlp_with_the_configured_header() {
    let receiver = Receiver::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the receiver");
    let address = listener.local_addr().expect("address");
    let service = MetricsServiceServer::new(receiver.clone());
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let lab = Lab::new(
        1,
        &format!(
            "[telemetry]\notlp_endpoint = \"http://{address}\"\n\
             otlp_headers = {{ authorization = \"{TOKEN}\" }}\notlp_interval = \"1s\"\n"
        ),
    );
    let controller = lab.start_controller(1, &[]);
    controller.must_log(&["pushing metrics over OTLP"]);
    let agent = lab.start_agent(&[]);
    agent.must_log(&["connected to controller"]);

    let host_metrics_arrived = || {
        receiver.latest("system.memory.usage").is_some_and(|m| {
            points(&m).iter().any(|(attributes, value)| {
                attribute(attributes, "agent.id").as_deref() == Some("leitstelle-1")
                    && attribute(attributes, "system.memory.state").as_deref() == Some("used")
                    && *value > 1e6
            })
        })
    };
    wait_until(
        "an OTLP push with the agent's system.memory.usage",
        Duration::from_secs(30),
        host_metrics_arrived,
    );

    let memory = receiver.latest("system.memory.usage").expect("memory");
    assert_eq!(memory.unit, "By");
    assert!(
        matches!(&memory.data, Some(metric::Data::Sum(s)) if !s.is_monotonic),
        "system.memory.usage is an up-down counter: {memory:?}"
    );
    let cpu = receiver.latest("system.cpu.utilization").expect("cpu");
    assert_eq!(cpu.unit, "1");
    assert!(matches!(cpu.data, Some(metric::Data::Gauge(_))));
    assert!(
        points(&cpu).iter().all(|(_, v)| (0.0..=1.0).contains(v)),
        "{cpu:?}"
    );
    let term = receiver.latest("leitstand.raft.term").expect("raft term");
    assert!(points(&term).iter().all(|(_, v)| *v >= 1.0), "{term:?}");
    let checks = receiver
        .latest("leitstand.check.status")
        .expect("check status");
    let statuses: Vec<(Option<String>, f64)> = points(&checks)
        .iter()
        .map(|(a, v)| (attribute(a, "check"), *v))
        .collect();
    assert!(
        statuses.contains(&(Some("dispatch-ok".into()), 0.0))
            && statuses.contains(&(Some("radio-down".into()), 2.0)),
        "{statuses:?}"
    );
    let rejected = receiver
        .latest("leitstand.inputs.rejected")
        .expect("refusals");
    assert!(
        matches!(&rejected.data, Some(metric::Data::Sum(s))
            if s.is_monotonic && s.data_points.len() == leitstand_controller::Rejection::ALL.len()),
        "a monotonic counter with one series per reason: {rejected:?}"
    );
    let accepted = receiver
        .latest("leitstand.reports.accepted")
        .expect("reports");
    assert_eq!(accepted.unit, "{report}");
    assert!(points(&accepted).iter().all(|(_, v)| *v >= 1.0));

    let services: Vec<String> = receiver
        .metrics
        .lock()
        .expect("metrics")
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        services.iter().all(|s| s == "leitstand-controller"),
        "{services:?}"
    );
    let headers = receiver.authorization.lock().expect("headers").clone();
    assert!(
        !headers.is_empty() && headers.iter().all(|h| h == TOKEN),
        "the configured header arrives with every push: {headers:?}"
    );
    let leaked: Vec<String> = controller
        .lines()
        .into_iter()
        .filter(|l| l.contains("otlp-test-secret"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the header value reached the log: {leaked:?}"
    );
}
