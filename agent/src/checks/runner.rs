//! Runs every check on its own timer and sends each result to the
//! reporter.
//!
//! One task per check: the first run starts after a random delay in
//! 0..=jitter (so checks, and agents restarted together, do not run in
//! lockstep), each later run `interval` plus a random 0..=jitter after the
//! start of the previous one. A run that outlasts the interval delays the
//! next rather than overlapping it. At most `max_concurrent` checks run at
//! once (a semaphore); a check waiting for a permit starts late, not twice.
//!
//! Dropping the [`CheckRunner`] aborts every task; a running exec check
//! then kills its plugin's process group (see `exec`). The tasks also end
//! by themselves once the receiver of the results is gone.

use std::sync::Arc;
use std::time::Duration;

use leitstand_proto::v1::{self, CheckStatus};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{CheckSpec, Outcome, bounded_result, run_once};

/// The running checks of an agent.
#[derive(Debug)]
pub(crate) struct CheckRunner {
    /// One per check; aborted when the runner is dropped.
    tasks: JoinSet<()>,
}

impl CheckRunner {
    /// Starts one task per check; see the module documentation.
    pub(crate) fn spawn(
        specs: Vec<CheckSpec>,
        max_concurrent: usize,
        results: mpsc::Sender<v1::CheckResult>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(
            max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut tasks = JoinSet::new();
        for spec in specs {
            tasks.spawn(run_periodically(
                Arc::new(spec),
                permits.clone(),
                results.clone(),
            ));
        }
        CheckRunner { tasks }
    }
}

impl Drop for CheckRunner {
    fn drop(&mut self) {
        // Dropping the JoinSet would abort them too; said here explicitly
        // because stopping every check is this type's contract.
        self.tasks.abort_all();
    }
}

async fn run_periodically(
    spec: Arc<CheckSpec>,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<v1::CheckResult>,
) {
    tokio::time::sleep(random_up_to(spec.jitter)).await;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return; // never closed; nothing left to do if it were
        };
        let started = Instant::now();
        let result = run_isolated(&spec).await;
        drop(permit);
        if results.send(result).await.is_err() {
            return; // the reporter is gone: the agent is stopping
        }
        tokio::time::sleep_until(started + spec.interval + random_up_to(spec.jitter)).await;
    }
}

/// [`run_once`] in a task of its own, so that even a panic in a probe
/// becomes an UNKNOWN result instead of silently ending the check's timer.
/// Aborting the caller aborts the run (and so kills an exec plugin).
async fn run_isolated(spec: &Arc<CheckSpec>) -> v1::CheckResult {
    let started = Instant::now();
    let task = {
        let spec = spec.clone();
        AbortOnDrop(tokio::spawn(async move { run_once(&spec).await }))
    };
    match task.join().await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(check = %spec.name, kind = spec.probe.kind(), error = %e, "a check run failed");
            let outcome = Outcome::new(
                CheckStatus::Unknown,
                format!("the {} check failed internally: {e}", spec.probe.kind()),
            );
            bounded_result(&spec.name, outcome, started.elapsed())
        }
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn random_up_to(max: Duration) -> Duration {
    let max = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(fastrand::u64(0..=max))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    // The paths lib.rs uses.
    use crate::checks::{CheckRunner, DEFAULT_MAX_CONCURRENT_CHECKS};

    /// (start, end) of a run in µs since the epoch, from its result.
    fn span_us(result: &v1::CheckResult) -> (i64, i64) {
        let end = result.observed_at_unix_ms * 1000;
        let duration = i64::try_from(result.duration_us).expect("fits");
        (end - duration, end)
    }

    async fn must_receive(rx: &mut mpsc::Receiver<v1::CheckResult>) -> v1::CheckResult {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(result)) => {
                must_be_valid(&result);
                result
            }
            Ok(None) => panic!("the runner closed the results channel"),
            Err(_) => panic!("no check result within 10 s"),
        }
    }

    fn slow_checks(count: usize) -> Vec<CheckSpec> {
        let text: String = (0..count)
            .map(|i| {
                format!(
                    "[[check]]\nname = \"slow{i}\"\nkind = \"exec\"\nargv = [\"/bin/sleep\", \"0.3\"]\ninterval = \"1h\"\njitter = \"0s\"\ntimeout = \"10s\"\n"
                )
            })
            .collect();
        parse(&text).expect("valid checks")
    }

    #[tokio::test]
    async fn at_most_max_concurrent_run_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let _runner = CheckRunner::spawn(slow_checks(3), 1, tx);
        let mut spans = Vec::new();
        for _ in 0..3 {
            let result = must_receive(&mut rx).await;
            must_have_status(&result, CheckStatus::Ok);
            spans.push(span_us(&result));
        }
        spans.sort();
        // One at a time: each run starts after the previous one ended
        // (1 ms of slack for the millisecond resolution of observed_at).
        for pair in spans.windows(2) {
            assert!(pair[1].0 >= pair[0].1 - 1000, "runs overlap: {spans:?}");
        }
        let total = spans[2].1 - spans[0].0;
        assert!(
            total >= 3 * 300_000 - 1000,
            "three 0.3 s runs took {total} µs"
        );

        // With three permits the same checks overlap.
        let (tx, mut rx) = mpsc::channel(16);
        let _runner = CheckRunner::spawn(slow_checks(3), 3, tx);
        let mut spans = Vec::new();
        for _ in 0..3 {
            spans.push(span_us(&must_receive(&mut rx).await));
        }
        let last_start = spans.iter().map(|s| s.0).max().expect("three");
        let first_end = spans.iter().map(|s| s.1).min().expect("three");
        assert!(last_start < first_end, "runs did not overlap: {spans:?}");
    }

    #[tokio::test]
    async fn results_come_every_interval() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let specs = parse(&format!(
            "[[check]]\nname = \"tick\"\nkind = \"tcp\"\ntarget = \"{address}\"\ninterval = \"100ms\"\njitter = \"20ms\"\n"
        ))
        .expect("valid check");
        let (tx, mut rx) = mpsc::channel(16);
        let _runner = CheckRunner::spawn(specs, DEFAULT_MAX_CONCURRENT_CHECKS, tx);
        let mut starts = Vec::new();
        for _ in 0..4 {
            let result = must_receive(&mut rx).await;
            assert_eq!(result.name, "tick");
            must_have_status(&result, CheckStatus::Ok);
            starts.push(span_us(&result).0);
        }
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            // At least the interval (2 ms of slack for the resolution of
            // observed_at and the spawn of the run);
            // the upper bound only guards against a stuck timer.
            assert!(
                (98_000..2_000_000).contains(&gap),
                "gap {gap} µs in {starts:?}"
            );
        }
    }

    #[tokio::test]
    async fn dropping_the_runner_stops_every_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = dir.path().join("hang");
        std::fs::write(&script, "#!/bin/sh\nsleep 300 &\necho $! > \"$1\"\nwait\n")
            .expect("script");
        let specs = parse(&format!(
            "[[check]]\nname = \"hang\"\nkind = \"exec\"\nargv = [\"/bin/sh\", {:?}, {:?}]\ninterval = \"1s\"\njitter = \"0s\"\ntimeout = \"60s\"\n\
             [[check]]\nname = \"other\"\nkind = \"exec\"\nargv = [\"/bin/true\"]\ninterval = \"100ms\"\n",
            script.display().to_string(),
            pid_file.display().to_string(),
        ))
        .expect("valid checks");
        let (tx, mut rx) = mpsc::channel(16);
        let runner = CheckRunner::spawn(specs, 8, tx);
        assert_eq!(must_receive(&mut rx).await.name, "other");
        wait_for(
            "the hanging plugin to write its background child's pid",
            || std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')),
        )
        .await;
        let background: u32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        drop(runner);
        // Every task ended: all senders are gone once the buffered results
        // are taken.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(result) = rx.recv().await {
                assert_ne!(result.name, "hang", "the hanging check never finished");
            }
        })
        .await;
        assert!(closed.is_ok(), "the results channel stayed open");
        must_end(background).await;
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let max = Duration::from_millis(20);
        let delays: Vec<Duration> = (0..1000).map(|_| random_up_to(max)).collect();
        assert!(delays.iter().all(|d| *d <= max));
        assert!(delays.iter().any(|d| *d < max / 4) && delays.iter().any(|d| *d > max * 3 / 4));
        assert_eq!(random_up_to(Duration::ZERO), Duration::ZERO);
    }
}
