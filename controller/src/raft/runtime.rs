//! The Raft thread: a tokio runtime of its own for the node's driver and
//! its peer links, so that Raft ticks, heartbeats and appends never queue
//! behind the agent sessions on the controller's main runtime.
//!
//! Why: with 10 000 agent sessions the main runtime's workers can be busy
//! for longer than an election timeout (500 ms). A driver sharing them
//! ticks late, sends heartbeats late, and the followers elect a new leader
//! that inherits the same load (docs/benchmarks.md, "Ingest"). On its own
//! thread the driver gets its share of the CPU from the kernel's scheduler
//! however many tasks the gateway has queued.
//!
//! One worker, multi-thread flavour: the driver's fsyncs run in
//! `block_in_place` (see `node.rs`, "Blocking"), which hands the worker to
//! another thread meanwhile, so the peer links keep sending the appends a
//! Ready emitted before its fsync — the overlap the Raft commit latency
//! depends on. A current-thread runtime would serialise them.
//!
//! What runs here is whatever is spawned while [`RaftRuntime::enter`] is
//! held: `RaftNode::start`, `GrpcTransport::start` (which keeps the handle
//! for links started later), and the controller's server for connections
//! from other controllers, so the followers' answers are read on this
//! thread too (lib.rs, `split_incoming`). Tests start nodes and transports
//! on their own runtime (paused time needs the test's current-thread
//! runtime) and never use this.

use tokio::runtime::{Builder, EnterGuard, Handle, Runtime};

/// The runtime of the Raft thread. Dropping it stops its tasks without
/// waiting (stop the node first to sync its log).
#[derive(Debug)]
pub(crate) struct RaftRuntime {
    handle: Handle,
    /// Taken only by `drop`.
    runtime: Option<Runtime>,
}

impl RaftRuntime {
    pub(crate) fn start() -> std::io::Result<RaftRuntime> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("leitstand-raft")
            .enable_all()
            .build()?;
        Ok(RaftRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// While the guard lives, `tokio::spawn` (and everything that spawns
    /// through it, such as tonic's channels) puts tasks on the Raft thread.
    pub(crate) fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // Dropped from async code (the controller's shutdown), where a
        // blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
