//! A fault-injecting TCP relay on loopback that sits on one link of a sandbox cluster.
//!
//! A [`Proxy`] listens on `127.0.0.1:0` and relays every accepted connection to one
//! upstream address, byte for byte: the traffic is mTLS and the proxy never looks
//! inside. [`Proxy::set`] switches a [`Fault`] at runtime; the change applies at once
//! to open connections and to new ones (each copy loop watches a `watch` channel).
//!
//! Shape of a connection: one task per connection; inside it, per direction, a reader
//! that stamps each chunk with its arrival time and a writer that applies the current
//! fault to the chunk and writes it. Between them a bounded queue
//! ([`QUEUE_CHUNKS`] × [`CHUNK`] = 4 MiB): when the writer holds back (delay,
//! bandwidth, a slow peer) the reader stops reading and TCP pushes back on the sender.
//! Because one writer handles the chunks of a direction in turn, a chunk never
//! overtakes the one before it.
//!
//! Randomness (delay jitter, drop decisions) comes from a [`StdRng`] per connection
//! and direction seeded from the proxy's seed and the connection number, so a run
//! with the same seed and the same traffic makes the same decisions.
//!
//! Invariants: the proxy never alters, reorders or invents bytes, only withholds,
//! discards or cuts; dropping the [`Proxy`] (or [`Proxy::stop`]) ends the listener
//! and every connection task.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

/// Largest chunk read from one side at a time.
const CHUNK: usize = 64 * 1024;

/// Chunks queued per direction between reader and writer: with [`CHUNK`] at most
/// 4 MiB per direction and connection are held back.
const QUEUE_CHUNKS: usize = 64;

/// How long the proxy waits for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way through the proxy a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    Both,
    /// Client → upstream.
    Forward,
    /// Upstream → client.
    Backward,
}

impl Direction {
    /// Whether a fault on `self` applies to bytes travelling `way`.
    fn covers(self, way: Direction) -> bool {
        self == Direction::Both || self == way
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Both => "both directions",
            Direction::Forward => "client → upstream",
            Direction::Backward => "upstream → client",
        })
    }
}

/// What the proxy does to the traffic of its link. Replaced as a whole by
/// [`Proxy::set`]; [`Fault::None`] heals.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Bytes pass unchanged.
    None,
    /// Bytes in `direction` (and a FIN there) are silently discarded; connections stay
    /// open. A partition as the network makes it: no RST, timeouts must notice. New
    /// connections are accepted but carry nothing in that direction. After healing,
    /// new bytes flow on surviving connections; discarded bytes stay lost (which breaks
    /// a TLS stream, as it would in reality).
    Blackhole { direction: Direction },
    /// Open connections are reset and new ones reset at once: a crashed host, or a
    /// firewall's REJECT.
    Refuse,
    /// Every chunk waits `base ± jitter` (uniform, seeded, not below zero) after its
    /// arrival before it is forwarded; a chunk never overtakes the one before it.
    Delay { base: Duration, jitter: Duration },
    /// Each chunk, with this probability (seeded), cuts its connection: both sides are
    /// reset. A lossy link that breaks streams.
    DropConnections { probability: f64 },
    /// At most this many bytes per second per direction and connection (a token bucket
    /// holding a tenth of a second), delaying, never discarding. 0 stops the flow.
    Bandwidth { bytes_per_second: u64 },
    /// The upstream side is closed (it sees EOF) but the client's socket stays open and
    /// silent: nothing arrives, writes vanish. When the fault changes away from
    /// `HalfOpen`, such connections are reset, as a restarted host answers a
    /// connection it forgot.
    HalfOpen,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Blackhole { direction } => write!(f, "blackhole ({direction})"),
            Fault::Refuse => f.write_str("refuse connections"),
            Fault::Delay { base, jitter } if jitter.is_zero() => write!(f, "delay {base:?}"),
            Fault::Delay { base, jitter } => write!(f, "delay {base:?} ±{jitter:?}"),
            Fault::DropConnections { probability } => {
                write!(f, "drop connections (p = {probability})")
            }
            Fault::Bandwidth { bytes_per_second } => {
                let rate = *bytes_per_second;
                if rate >= 1 << 20 && rate % (1 << 20) == 0 {
                    write!(f, "bandwidth {} MiB/s", rate >> 20)
                } else if rate >= 1 << 10 && rate % (1 << 10) == 0 {
                    write!(f, "bandwidth {} KiB/s", rate >> 10)
                } else {
                    write!(f, "bandwidth {rate} B/s")
                }
            }
            Fault::HalfOpen => f.write_str("half-open"),
        }
    }
}

/// A snapshot of a proxy's counters (kept as atomics inside the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections relayed (or held half open) since the start.
    pub accepted: u64,
    /// Connections closed at once: by [`Fault::Refuse`], or the upstream was unreachable.
    pub refused: u64,
    /// Open connections cut by a fault ([`Fault::Refuse`], [`Fault::DropConnections`]).
    pub cut: u64,
    /// Bytes written to the upstream.
    pub bytes_forward: u64,
    /// Bytes written to clients.
    pub bytes_backward: u64,
    /// Connections open now.
    pub open: u64,
}

/// The live counters behind [`ProxyStats`].
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    bytes_forward: AtomicU64,
    bytes_backward: AtomicU64,
    open: AtomicU64,
}

impl Counters {
    fn bytes(&self, way: Direction) -> &AtomicU64 {
        match way {
            Direction::Backward => &self.bytes_backward,
            Direction::Forward | Direction::Both => &self.bytes_forward,
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a connection as open for as long as it lives (also when its task is aborted).
struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    fn new(counters: &Arc<Counters>) -> OpenGuard {
        Counters::bump(&counters.open);
        OpenGuard(Arc::clone(counters))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fault-injecting relay from a loopback port to one upstream address.
///
/// Dropping it stops the listener and cuts every connection (their tasks are aborted);
/// [`Proxy::stop`] does the same and waits until every task has ended.
#[derive(Debug)]
pub struct Proxy {
    name: Arc<str>,
    address: SocketAddr,
    faults: watch::Sender<Fault>,
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    /// The accept loop, which owns the connection tasks.
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Binds `127.0.0.1:0` and forwards each accepted connection to `upstream`. `seed`
    /// makes the random decisions (jitter, drops) reproducible.
    pub async fn start(
        name: impl Into<String>,
        upstream: SocketAddr,
        seed: u64,
    ) -> anyhow::Result<Proxy> {
        let name: Arc<str> = name.into().into();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .with_context(|| format!("proxy {name}: binding 127.0.0.1:0"))?;
        let address = listener
            .local_addr()
            .with_context(|| format!("proxy {name}: reading the bound address"))?;
        let (faults, faults_rx) = watch::channel(Fault::None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let link = Arc::new(Link {
            name: Arc::clone(&name),
            upstream,
            seed,
            faults: faults_rx,
            counters: Arc::clone(&counters),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(link, listener, shutdown_rx));
        debug!(proxy = %name, %address, %upstream, "proxy listening");
        Ok(Proxy {
            name,
            address,
            faults,
            counters,
            shutdown,
            tasks,
        })
    }

    /// The address clients connect to instead of the upstream.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The name given at the start, used in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the current fault; it applies at once to open and new connections.
    /// [`Fault::None`] heals.
    pub fn set(&self, fault: Fault) {
        debug!(proxy = %self.name, %fault, "fault set");
        self.faults.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.faults.borrow().clone()
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            accepted: load(&c.accepted),
            refused: load(&c.refused),
            cut: load(&c.cut),
            bytes_forward: load(&c.bytes_forward),
            bytes_backward: load(&c.bytes_backward),
            open: load(&c.open),
        }
    }

    /// Closes the listener and every connection, and waits until all tasks have ended.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = joined {
                debug!(proxy = %self.name, %error, "accept loop ended abnormally");
            }
        }
        debug!(proxy = %self.name, "proxy stopped");
    }
}

/// What every connection task of one proxy shares.
#[derive(Debug)]
struct Link {
    name: Arc<str>,
    upstream: SocketAddr,
    seed: u64,
    faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
}

async fn accept_loop(link: Arc<Link>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut number: u64 = 0;
    loop {
        tokio::select! {
            () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    number += 1;
                    connections.spawn(serve(Arc::clone(&link), number, client, peer));
                }
                Err(error) => {
                    // Out of descriptors and the like: retry without spinning.
                    debug!(proxy = %link.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    debug!(proxy = %link.name, %error, "connection task ended abnormally");
                }
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Why a relayed connection ended.
#[derive(Debug)]
enum Ending {
    /// Both directions reached EOF (or were blackholed at EOF) and were passed on.
    Closed,
    /// A side failed or a [`Fault::DropConnections`] decision cut the connection.
    Broken(Broken),
    /// The fault became [`Fault::Refuse`] or [`Fault::HalfOpen`].
    Fault(Fault),
}

#[derive(Debug)]
enum Broken {
    Dropped(Direction),
    Read(Direction, io::Error),
    Write(Direction, io::Error),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Dropped(way) => write!(f, "dropped by fault ({way})"),
            Broken::Read(way, error) => write!(f, "read failed ({way}): {error}"),
            Broken::Write(way, error) => write!(f, "write failed ({way}): {error}"),
        }
    }
}

/// One accepted client connection, from accept to close.
async fn serve(link: Arc<Link>, number: u64, mut client: TcpStream, peer: SocketAddr) {
    let name = &link.name;
    let mut faults = link.faults.clone();
    let fault = faults.borrow_and_update().clone();
    match fault {
        Fault::Refuse => {
            Counters::bump(&link.counters.refused);
            debug!(proxy = %name, connection = number, %peer, "refused");
            reset(client);
            return;
        }
        Fault::HalfOpen => {
            Counters::bump(&link.counters.accepted);
            let _open = OpenGuard::new(&link.counters);
            debug!(proxy = %name, connection = number, %peer, "accepted half open");
            hold_half_open(&link, number, client, faults).await;
            return;
        }
        _ => {}
    }
    let mut upstream = match connect_upstream(link.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            Counters::bump(&link.counters.refused);
            debug!(proxy = %name, connection = number, upstream = %link.upstream, %error, "upstream unreachable");
            reset(client);
            return;
        }
    };
    Counters::bump(&link.counters.accepted);
    let _open = OpenGuard::new(&link.counters);
    debug!(proxy = %name, connection = number, %peer, "accepted");
    // The proxy passes chunks on as they come; Nagle would add its own delay.
    for socket in [&client, &upstream] {
        if let Err(error) = socket.set_nodelay(true) {
            debug!(proxy = %name, connection = number, %error, "setting TCP_NODELAY failed");
        }
    }
    let ending = relay(&link, number, &mut client, &mut upstream, faults.clone()).await;
    match ending {
        Ending::Closed => debug!(proxy = %name, connection = number, "closed"),
        Ending::Broken(broken) => {
            if let Broken::Dropped(_) = broken {
                Counters::bump(&link.counters.cut);
            }
            debug!(proxy = %name, connection = number, reason = %broken, "cut");
            reset(client);
            reset(upstream);
        }
        Ending::Fault(Fault::HalfOpen) => {
            debug!(proxy = %name, connection = number, "upstream side closed, client held half open");
            drop(upstream);
            hold_half_open(&link, number, client, faults).await;
        }
        Ending::Fault(fault) => {
            Counters::bump(&link.counters.cut);
            debug!(proxy = %name, connection = number, %fault, "cut");
            reset(client);
            reset(upstream);
        }
    }
}

/// Connects to the upstream, giving up after [`CONNECT_TIMEOUT`].
async fn connect_upstream(upstream: SocketAddr) -> io::Result<TcpStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            ))
        })
}

/// Closes `socket` with a reset instead of a FIN.
fn reset(socket: TcpStream) {
    // Without zero linger the close is a FIN: still a close, only less abrupt.
    let _ = socket.set_zero_linger();
    drop(socket);
}

/// Relays both directions until both end, one breaks, or a fault ends the relaying.
async fn relay(
    link: &Link,
    number: u64,
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    faults: watch::Receiver<Fault>,
) -> Ending {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let forward = pipe(
        link,
        number,
        Direction::Forward,
        client_read,
        upstream_write,
    );
    let backward = pipe(
        link,
        number,
        Direction::Backward,
        upstream_read,
        client_write,
    );
    tokio::select! {
        both = async { tokio::try_join!(forward, backward) } => match both {
            Ok(_) => Ending::Closed,
            Err(broken) => Ending::Broken(broken),
        },
        fault = fatal(faults) => Ending::Fault(fault),
    }
}

/// Resolves when the fault is one that ends relaying ([`Fault::Refuse`], [`Fault::HalfOpen`]).
async fn fatal(mut faults: watch::Receiver<Fault>) -> Fault {
    loop {
        let fault = faults.borrow_and_update().clone();
        if matches!(fault, Fault::Refuse | Fault::HalfOpen) {
            return fault;
        }
        changed(&mut faults).await;
    }
}

/// Waits for the next fault change; never resolves once the proxy is gone (its tasks
/// are being aborted then).
async fn changed(faults: &mut watch::Receiver<Fault>) {
    if faults.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps a client connection open and silent, discarding what it sends, until it
/// closes or the fault changes away from [`Fault::HalfOpen`] (then it is reset).
async fn hold_half_open(
    link: &Link,
    number: u64,
    mut client: TcpStream,
    mut faults: watch::Receiver<Fault>,
) {
    let mut sink = vec![0u8; CHUNK];
    loop {
        if *faults.borrow_and_update() != Fault::HalfOpen {
            debug!(proxy = %link.name, connection = number, "half-open connection reset");
            reset(client);
            return;
        }
        tokio::select! {
            read = client.read(&mut sink) => match read {
                Ok(0) | Err(_) => {
                    debug!(proxy = %link.name, connection = number, "half-open client went away");
                    return;
                }
                Ok(_) => {}
            },
            () = changed(&mut faults) => {}
        }
    }
}

/// A run of bytes read from one side; empty means EOF.
#[derive(Debug)]
struct Chunk {
    data: Vec<u8>,
    arrival: Instant,
}

/// One direction: a reader feeding a bounded queue, a writer applying the fault.
async fn pipe(
    link: &Link,
    number: u64,
    way: Direction,
    source: ReadHalf<'_>,
    sink: WriteHalf<'_>,
) -> Result<(), Broken> {
    let (queue, queued) = mpsc::channel(QUEUE_CHUNKS);
    let mut writer = Writer {
        way,
        sink,
        dice: Dice::new(link.seed, number, way),
        faults: link.faults.clone(),
        bucket: Bucket::default(),
        written: link.counters.bytes(way),
    };
    tokio::try_join!(read_side(way, source, queue), writer.run(queued)).map(|_| ())
}

async fn read_side(
    way: Direction,
    mut source: ReadHalf<'_>,
    queue: mpsc::Sender<Chunk>,
) -> Result<(), Broken> {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(|error| Broken::Read(way, error))?;
        let chunk = Chunk {
            data: buffer[..n].to_vec(),
            arrival: Instant::now(),
        };
        // The writer only goes away when its direction is done.
        if queue.send(chunk).await.is_err() || n == 0 {
            return Ok(());
        }
    }
}

/// The writing half of one direction and the state its faults keep.
struct Writer<'a> {
    way: Direction,
    sink: WriteHalf<'a>,
    dice: Dice,
    faults: watch::Receiver<Fault>,
    bucket: Bucket,
    written: &'a AtomicU64,
}

impl Writer<'_> {
    async fn run(&mut self, mut queued: mpsc::Receiver<Chunk>) -> Result<(), Broken> {
        while let Some(chunk) = queued.recv().await {
            let delivered = self.deliver(&chunk).await?;
            if chunk.data.is_empty() {
                if delivered {
                    self.sink
                        .shutdown()
                        .await
                        .map_err(|error| Broken::Write(self.way, error))?;
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies the current fault to `chunk` and writes it; re-decides whenever the
    /// fault changes while the chunk waits. False if the fault discarded it.
    async fn deliver(&mut self, chunk: &Chunk) -> Result<bool, Broken> {
        let mut rest: &[u8] = &chunk.data;
        let mut due: Option<Instant> = None;
        let mut rolled = false;
        loop {
            let fault = self.faults.borrow_and_update().clone();
            let mut limit = rest.len();
            let mut metered = false;
            match fault {
                Fault::Refuse | Fault::HalfOpen => {
                    // The connection is being ended by `fatal`; write nothing more.
                    changed(&mut self.faults).await;
                    continue;
                }
                Fault::Delay { base, jitter } => {
                    let at =
                        *due.get_or_insert_with(|| chunk.arrival + self.dice.delay(base, jitter));
                    if self.wait(Some(at)).await {
                        due = None;
                        continue;
                    }
                }
                Fault::Bandwidth { bytes_per_second } if !rest.is_empty() => {
                    match self
                        .bucket
                        .grant(bytes_per_second, rest.len(), Instant::now())
                    {
                        Ok(granted) => {
                            limit = granted;
                            metered = true;
                        }
                        Err(at) => {
                            self.wait(at).await;
                            continue;
                        }
                    }
                }
                _ => {}
            }
            match fault {
                Fault::Blackhole { direction } if direction.covers(self.way) => return Ok(false),
                Fault::DropConnections { probability } if !rolled => {
                    rolled = true;
                    if self.dice.cut(probability) {
                        return Err(Broken::Dropped(self.way));
                    }
                }
                _ => {}
            }
            if rest.is_empty() {
                return Ok(true);
            }
            tokio::select! {
                written = self.sink.write(&rest[..limit]) => {
                    let n = written.map_err(|error| Broken::Write(self.way, error))?;
                    if n == 0 {
                        return Err(Broken::Write(self.way, io::ErrorKind::WriteZero.into()));
                    }
                    self.written.fetch_add(n as u64, Ordering::Relaxed);
                    if metered {
                        self.bucket.refund(limit - n);
                    }
                    rest = &rest[n..];
                    if rest.is_empty() {
                        return Ok(true);
                    }
                }
                () = changed(&mut self.faults) => {
                    if metered {
                        self.bucket.refund(limit);
                    }
                }
            }
        }
    }

    /// Sleeps until `deadline` (forever if none) unless the fault changes first; true
    /// if it changed.
    async fn wait(&mut self, deadline: Option<Instant>) -> bool {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = sleep => false,
            () = changed(&mut self.faults) => true,
        }
    }
}

/// The seeded randomness of one connection direction.
#[derive(Debug)]
struct Dice {
    rng: StdRng,
}

impl Dice {
    /// A generator determined by the proxy's seed, the connection number and the way.
    fn new(seed: u64, connection: u64, way: Direction) -> Dice {
        let lane = connection
            .wrapping_mul(2)
            .wrapping_add(u64::from(way == Direction::Backward));
        Dice {
            rng: StdRng::seed_from_u64(seed ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// A delay uniform in `base ± jitter`, not below zero.
    fn delay(&mut self, base: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return base;
        }
        self.rng
            .gen_range(base.saturating_sub(jitter)..=base.saturating_add(jitter))
    }

    /// Whether to cut, with probability `probability` (clamped to 0..=1).
    fn cut(&mut self, probability: f64) -> bool {
        if probability >= 1.0 {
            true
        } else if probability > 0.0 {
            self.rng.gen_bool(probability)
        } else {
            // Zero, negative or NaN.
            false
        }
    }
}

/// A token bucket holding a tenth of a second's worth of bytes (at least one).
#[derive(Debug, Default)]
struct Bucket {
    /// The rate the tokens were counted for; a new rate starts a full bucket.
    rate: Option<u64>,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn capacity(rate: u64) -> f64 {
        (rate as f64 / 10.0).max(1.0)
    }

    /// How many of `want` bytes (≥ 1) may be written now, or when to ask again (never
    /// if the rate is zero).
    fn grant(&mut self, rate: u64, want: usize, now: Instant) -> Result<usize, Option<Instant>> {
        let capacity = Self::capacity(rate);
        if self.rate != Some(rate) {
            self.rate = Some(rate);
            self.tokens = capacity;
            self.last = Some(now);
        }
        if rate == 0 {
            return Err(None);
        }
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate as f64).min(capacity);
        self.last = Some(now);
        let need = (want as f64).min(capacity.floor()).max(1.0);
        if self.tokens >= need {
            self.tokens -= need;
            Ok(need as usize)
        } else {
            Err(Some(
                now + Duration::from_secs_f64((need - self.tokens) / rate as f64),
            ))
        }
    }

    /// Returns tokens granted but not used.
    fn refund(&mut self, unused: usize) {
        if let Some(rate) = self.rate {
            self.tokens = (self.tokens + unused as f64).min(Self::capacity(rate));
        }
    }
}

#[cfg(test)]
mod tests;
