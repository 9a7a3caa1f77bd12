//! The slog → tracing bridge: level, message and key-values arrive.

use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// One captured event: level, target and its fields as text.
#[derive(Debug, Clone)]
struct Captured {
    level: tracing::Level,
    target: String,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().expect("capture lock").push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields: fields.0,
        });
    }
}

fn capture(body: impl FnOnce()) -> Vec<Captured> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(capture.clone());
    tracing::subscriber::with_default(subscriber, body);
    capture.0.lock().expect("capture lock").clone()
}

#[test]
fn records_arrive_with_level_message_and_key_values() {
    let events = capture(|| {
        let logger = crate::raft::logger::logger(7).new(slog::o!("raft_id" => 7));
        slog::info!(logger, "became leader at term {term}", term = 3; "lead" => 7);
        slog::warn!(logger, "dropping a message");
        slog::crit!(logger, "cannot step");
        // Below the subscriber's DEBUG filter: not forwarded.
        slog::trace!(logger, "chatty");
    });
    let summary: Vec<(tracing::Level, Option<&str>)> = events
        .iter()
        .map(|event| (event.level, event.field("message")))
        .collect();
    assert_eq!(
        summary,
        vec![
            (tracing::Level::INFO, Some("became leader at term 3")),
            (tracing::Level::WARN, Some("dropping a message")),
            (tracing::Level::ERROR, Some("cannot step")),
        ]
    );
    let first = &events[0];
    assert_eq!(first.target, "raft");
    let kv = first.field("kv").expect("a kv field");
    for pair in ["term=3", "lead=7", "raft_id=7", "node_id=7"] {
        assert!(kv.contains(pair), "{pair} in {kv:?}");
    }
}
