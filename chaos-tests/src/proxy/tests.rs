//! Tests of the fault-injecting proxy over real loopback sockets, plus its schedule
//! and token bucket in isolation.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::{Bucket, Dice, Direction, Fault, Proxy, ProxyStats};

/// Upper bound for anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(5);

/// Awaits `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
async fn must<T>(what: &str, future: impl Future<Output = T>) -> T {
    match timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Asserts that `future` does not finish within `quiet`.
async fn must_stay_silent<T: std::fmt::Debug>(
    what: &str,
    quiet: Duration,
    future: impl Future<Output = T>,
) {
    if let Ok(value) = timeout(quiet, future).await {
        panic!("expected {what} to stay silent for {quiet:?}, got {value:?}");
    }
}

/// Waits until the proxy's counters satisfy `condition` (they are bumped by the
/// connection tasks, which may run a moment after the socket event the test saw).
async fn must_count(proxy: &Proxy, what: &str, condition: impl Fn(&ProxyStats) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = proxy.stats();
        if condition(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}; stats: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An upstream that hands each accepted connection to the test.
struct Upstream {
    address: SocketAddr,
    accepted: mpsc::UnboundedReceiver<TcpStream>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        let (tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        Upstream { address, accepted }
    }

    async fn must_accept(&mut self) -> TcpStream {
        must(
            "the upstream to accept a relayed connection",
            self.accepted.recv(),
        )
        .await
        .expect("upstream listener alive")
    }
}

/// An upstream that echoes every connection back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let address = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

async fn connect(proxy: &Proxy) -> TcpStream {
    must(
        "a connection to the proxy",
        TcpStream::connect(proxy.address()),
    )
    .await
    .expect("connect to proxy")
}

/// Reads exactly `len` bytes.
async fn must_read(what: &str, stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    must(what, stream.read_exact(&mut buffer))
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    buffer
}

/// Waits until the peer closes or resets `stream`, failing if data arrives instead.
async fn must_be_closed(what: &str, stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    match must(what, stream.read(&mut buffer)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{what}: expected EOF or reset, read {n} bytes"),
    }
}

async fn must_round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.expect("write to proxy");
    let echoed = must_read("the echo", stream, message.len()).await;
    assert_eq!(echoed, message, "echo differs");
}

#[tokio::test]
async fn bytes_pass_unchanged_both_ways() {
    let proxy = Proxy::start("pass", echo_server().await, 1)
        .await
        .expect("start proxy");
    let mut payload = vec![0u8; 1 << 20];
    StdRng::seed_from_u64(7).fill(&mut payload[..]);

    let (mut read, mut write) = connect(&proxy).await.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|()| write) });
    let mut echoed = vec![0u8; payload.len()];
    must(
        "1 MiB echoed through the proxy",
        read.read_exact(&mut echoed),
    )
    .await
    .expect("read echo");
    assert!(
        echoed == payload,
        "the echoed 1 MiB differs from what was sent"
    );
    let _write = writer.await.expect("writer task").expect("write 1 MiB");

    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.open), (1, 1), "{stats:?}");
    assert_eq!(
        (stats.bytes_forward, stats.bytes_backward),
        (1 << 20, 1 << 20),
        "{stats:?}"
    );
}

#[tokio::test]
async fn blackhole_forward_discards_client_bytes_and_heals() {
    let mut upstream = Upstream::start().await;
    let proxy = Proxy::start("blackhole", upstream.address, 1)
        .await
        .expect("start proxy");
    let mut client = connect(&proxy).await;
    let mut server = upstream.must_accept().await;

    proxy.set(Fault::Blackhole {
        direction: Direction::Forward,
    });
    client
        .write_all(b"lost")
        .await
        .expect("client write succeeds into the blackhole");
    let mut buffer = [0u8; 16];
    must_stay_silent(
        "the upstream read",
        Duration::from_millis(300),
        server.read(&mut buffer),
    )
    .await;

    server.write_all(b"back").await.expect("upstream write");
    assert_eq!(
        must_read("the backward bytes", &mut client, 4).await,
        b"back"
    );

    proxy.set(Fault::None);
    client
        .write_all(b"again")
        .await
        .expect("client write after healing");
    assert_eq!(
        must_read("bytes on the surviving connection", &mut server, 5).await,
        b"again",
        "the blackholed bytes must stay lost, new ones flow"
    );

    let mut fresh = connect(&proxy).await;
    let mut fresh_server = upstream.must_accept().await;
    fresh
        .write_all(b"hello")
        .await
        .expect("write on a new connection");
    assert_eq!(
        must_read("bytes on a new connection", &mut fresh_server, 5).await,
        b"hello"
    );
}

#[tokio::test]
async fn refuse_cuts_open_connections_and_new_ones() {
    let proxy = Proxy::start("refuse", echo_server().await, 1)
        .await
        .expect("start proxy");
    let mut client = connect(&proxy).await;
    must_round_trip(&mut client, b"ping").await;

    proxy.set(Fault::Refuse);
    must_be_closed("the open connection to be cut", &mut client).await;

    // The reset may already fail the connect, or the first read.
    let late = async {
        let mut late = TcpStream::connect(proxy.address()).await?;
        let mut buffer = [0u8; 8];
        late.read(&mut buffer).await
    };
    match timeout(Duration::from_secs(1), late).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("a refused connection delivered {n} bytes"),
        Err(_) => panic!("a new connection under Refuse was not closed within 1 s"),
    }
    let stats = proxy.stats();
    assert_eq!(
        (stats.cut, stats.refused, stats.open),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn delay_holds_every_chunk_and_keeps_order() {
    let proxy = Proxy::start("delay", echo_server().await, 1)
        .await
        .expect("start proxy");
    proxy.set(Fault::Delay {
        base: Duration::from_millis(100),
        jitter: Duration::ZERO,
    });
    let mut client = connect(&proxy).await;
    let start = Instant::now();
    must_round_trip(&mut client, b"x").await;
    let round_trip = start.elapsed();
    assert!(
        round_trip >= Duration::from_millis(200),
        "round trip took {round_trip:?}, expected ≥ 200 ms"
    );

    // With jitter wider than the gap between writes, order must still hold.
    proxy.set(Fault::Delay {
        base: Duration::from_millis(20),
        jitter: Duration::from_millis(19),
    });
    let (mut read, mut write) = client.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..500u32 {
            write.write_all(&i.to_be_bytes()).await?;
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        Ok::<_, std::io::Error>(write)
    });
    let mut echoed = vec![0u8; 500 * 4];
    must("500 small chunks echoed", read.read_exact(&mut echoed))
        .await
        .expect("read echo");
    let _write = writer.await.expect("writer task").expect("write chunks");
    for (i, bytes) in echoed.chunks(4).enumerate() {
        let got = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        assert_eq!(got as usize, i, "chunk {i} came back out of order");
    }
}

#[tokio::test]
async fn bandwidth_limits_the_rate() {
    let mut upstream = Upstream::start().await;
    let proxy = Proxy::start("bandwidth", upstream.address, 1)
        .await
        .expect("start proxy");
    proxy.set(Fault::Bandwidth {
        bytes_per_second: 100 * 1024,
    });
    let mut client = connect(&proxy).await;
    let mut server = upstream.must_accept().await;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        client
            .write_all(&vec![0x5a; 200 * 1024])
            .await
            .map(|()| client)
    });
    let mut received = vec![0u8; 200 * 1024];
    timeout(Duration::from_secs(10), server.read_exact(&mut received))
        .await
        .expect("200 KiB at 100 KiB/s arrive within 10 s")
        .expect("upstream read");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "200 KiB at 100 KiB/s took {took:?}, expected ≥ 1.5 s"
    );
    assert!(
        received.iter().all(|b| *b == 0x5a),
        "bytes changed in transit"
    );
    let _client = writer.await.expect("writer task").expect("client write");
}

#[tokio::test]
async fn drop_connections_with_probability_one_cuts_on_the_first_chunk() {
    let proxy = Proxy::start("drop", echo_server().await, 1)
        .await
        .expect("start proxy");
    proxy.set(Fault::DropConnections { probability: 1.0 });
    let mut client = connect(&proxy).await;
    client.write_all(b"x").await.expect("write");
    must_be_closed("the connection to be cut on its first chunk", &mut client).await;
    must_count(&proxy, "one cut connection", |s| s.cut == 1).await;
}

#[tokio::test]
async fn drop_connections_with_probability_zero_never_cuts() {
    let proxy = Proxy::start("drop", echo_server().await, 1)
        .await
        .expect("start proxy");
    proxy.set(Fault::DropConnections { probability: 0.0 });
    let mut client = connect(&proxy).await;
    for i in 0..100u32 {
        must_round_trip(&mut client, &i.to_be_bytes()).await;
    }
    assert_eq!(proxy.stats().cut, 0, "{:?}", proxy.stats());
}

#[tokio::test]
async fn half_open_closes_upstream_and_keeps_client_silent() {
    let mut upstream = Upstream::start().await;
    let proxy = Proxy::start("half-open", upstream.address, 1)
        .await
        .expect("start proxy");
    let mut client = connect(&proxy).await;
    let mut server = upstream.must_accept().await;

    proxy.set(Fault::HalfOpen);
    let mut buffer = [0u8; 16];
    let n = must(
        "the upstream to see the connection close",
        server.read(&mut buffer),
    )
    .await
    .expect("upstream read");
    assert_eq!(n, 0, "the upstream should see EOF");

    client
        .write_all(b"into the void")
        .await
        .expect("client writes still succeed");
    must_stay_silent(
        "the client read",
        Duration::from_millis(500),
        client.read(&mut buffer),
    )
    .await;
    assert_eq!(
        proxy.stats().open,
        1,
        "the client side stays open: {:?}",
        proxy.stats()
    );

    // Healing resets what the "restarted host" forgot.
    proxy.set(Fault::None);
    must_be_closed(
        "the half-open connection to be reset after healing",
        &mut client,
    )
    .await;
}

#[tokio::test]
async fn stop_closes_the_listener_and_every_connection() {
    let proxy = Proxy::start("stop", echo_server().await, 1)
        .await
        .expect("start proxy");
    let mut client = connect(&proxy).await;
    must_round_trip(&mut client, b"ping").await;
    let address = proxy.address();
    must("the proxy to stop", proxy.stop()).await;
    must_be_closed("the connection to end with the proxy", &mut client).await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is still accepting"
    );
}

#[tokio::test]
async fn drop_closes_every_connection() {
    let proxy = Proxy::start("drop-proxy", echo_server().await, 1)
        .await
        .expect("start proxy");
    let mut client = connect(&proxy).await;
    must_round_trip(&mut client, b"ping").await;
    drop(proxy);
    must_be_closed("the connection to end with the dropped proxy", &mut client).await;
}

#[test]
fn same_seed_same_schedule() {
    let base = Duration::from_millis(50);
    let jitter = Duration::from_millis(20);
    let schedule = |seed, connection, way| {
        let mut dice = Dice::new(seed, connection, way);
        (0..100)
            .map(|_| dice.delay(base, jitter))
            .collect::<Vec<_>>()
    };
    let first = schedule(42, 3, Direction::Forward);
    assert_eq!(
        first,
        schedule(42, 3, Direction::Forward),
        "same seed, same schedule"
    );
    assert_ne!(
        first,
        schedule(43, 3, Direction::Forward),
        "another seed, another schedule"
    );
    assert_ne!(
        first,
        schedule(42, 4, Direction::Forward),
        "another connection, another schedule"
    );
    assert_ne!(
        first,
        schedule(42, 3, Direction::Backward),
        "another direction, another schedule"
    );
    assert!(
        first
            .iter()
            .all(|d| (base - jitter..=base + jitter).contains(d)),
        "delays outside 50ms ± 20ms: {first:?}"
    );
    assert!(
        first.iter().any(|d| *d != first[0]),
        "jitter produced no variation"
    );

    let mut dice = Dice::new(1, 1, Direction::Forward);
    let clamped = dice.delay(Duration::from_millis(5), Duration::from_millis(10));
    assert!(
        clamped <= Duration::from_millis(15),
        "5ms ± 10ms gave {clamped:?}"
    );
    let cuts = |seed| {
        let mut dice = Dice::new(seed, 1, Direction::Forward);
        (0..64).map(|_| dice.cut(0.5)).collect::<Vec<_>>()
    };
    assert_eq!(cuts(9), cuts(9), "drop decisions are reproducible");
    assert!(!dice.cut(0.0) && !dice.cut(f64::NAN) && dice.cut(1.0));
}

#[test]
fn bucket_grants_a_tenth_of_a_second_then_paces() {
    let now = Instant::now();
    let mut bucket = Bucket::default();
    assert_eq!(
        bucket.grant(100_000, 50_000, now),
        Ok(10_000),
        "a full bucket holds 0.1 s"
    );
    let Err(Some(at)) = bucket.grant(100_000, 50_000, now) else {
        panic!("an empty bucket must say when to ask again");
    };
    assert_eq!(at - now, Duration::from_millis(100));
    assert_eq!(bucket.grant(100_000, 50_000, at), Ok(10_000));
    bucket.refund(4_000);
    assert_eq!(
        bucket.grant(100_000, 4_000, at),
        Ok(4_000),
        "refunded tokens are spent again"
    );
    assert_eq!(bucket.grant(0, 10, at), Err(None), "rate zero never grants");
}

#[test]
fn faults_describe_themselves() {
    let check = |fault: Fault, expected: &str| assert_eq!(fault.to_string(), expected, "{fault:?}");
    check(Fault::None, "none");
    check(
        Fault::Blackhole {
            direction: Direction::Both,
        },
        "blackhole (both directions)",
    );
    check(
        Fault::Blackhole {
            direction: Direction::Forward,
        },
        "blackhole (client → upstream)",
    );
    check(Fault::Refuse, "refuse connections");
    check(
        Fault::Delay {
            base: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
        },
        "delay 50ms ±20ms",
    );
    check(
        Fault::Delay {
            base: Duration::from_millis(50),
            jitter: Duration::ZERO,
        },
        "delay 50ms",
    );
    check(
        Fault::DropConnections { probability: 0.05 },
        "drop connections (p = 0.05)",
    );
    check(
        Fault::Bandwidth {
            bytes_per_second: 100 * 1024,
        },
        "bandwidth 100 KiB/s",
    );
    check(
        Fault::Bandwidth {
            bytes_per_second: 2 << 20,
        },
        "bandwidth 2 MiB/s",
    );
    check(
        Fault::Bandwidth {
            bytes_per_second: 1500,
        },
        "bandwidth 1500 B/s",
    );
    check(Fault::HalfOpen, "half-open");
}
