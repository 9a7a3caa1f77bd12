//! The Prometheus endpoint: a deliberately tiny HTTP/1.1 server on plain
//! tokio. `GET /metrics` answers the text exposition format; anything else
//! is 404 (405 for another method on /metrics). Bounded: at most
//! [`MAX_CONNECTIONS`] at once (more are closed unanswered), a request head
//! of at most [`MAX_REQUEST_BYTES`], and [`CONNECTION_TIMEOUT`] for the
//! whole exchange. One request per connection (`Connection: close`).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub(super) const MAX_CONNECTIONS: usize = 16;
pub(super) const MAX_REQUEST_BYTES: usize = 8 * 1024;
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// What is read and discarded after refusing a request, at most.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Accepts until `stop`.
pub(super) async fn serve(
    listener: TcpListener,
    registry: prometheus::Registry,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little, go on.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "metrics endpoint: too many connections; closing one");
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(CONNECTION_TIMEOUT, exchange(stream, &registry)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%remote, %error, "metrics endpoint"),
                Err(_) => tracing::debug!(%remote, "metrics endpoint: request timed out"),
            }
        });
    }
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Metrics,
    MethodNotAllowed,
    NotFound,
    BadRequest,
}

/// Routes a request head (everything up to the blank line).
pub(super) fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Route::BadRequest;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

async fn exchange(mut stream: TcpStream, registry: &prometheus::Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    let route: Route = loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break route(&head);
        }
        if head.len() > MAX_REQUEST_BYTES {
            break Route::BadRequest;
        }
    };
    let (status, content_type, extra, body) = match route {
        Route::Metrics => {
            let registry = registry.clone();
            // Collecting runs every callback: off the async workers.
            let encoded = tokio::task::spawn_blocking(move || {
                let encoder = TextEncoder::new();
                let mut body = Vec::new();
                encoder
                    .encode(&registry.gather(), &mut body)
                    .map(|()| (encoder.format_type().to_owned(), body))
            })
            .await
            .map_err(std::io::Error::other)?;
            match encoded {
                Ok((content_type, body)) => ("200 OK", content_type, "", body),
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: cannot encode the metrics");
                    (
                        "500 Internal Server Error",
                        "text/plain; charset=utf-8".to_owned(),
                        "",
                        b"cannot encode the metrics\n".to_vec(),
                    )
                }
            }
        }
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8".to_owned(),
            "Allow: GET\r\n",
            b"only GET /metrics\n".to_vec(),
        ),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8".to_owned(),
            "",
            b"only GET /metrics\n".to_vec(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8".to_owned(),
            "",
            b"bad request\n".to_vec(),
        ),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    if route == Route::BadRequest {
        // Read what the client still sends (bounded), so closing does not
        // reset the connection before it has read the answer.
        let mut drained = 0;
        while drained < MAX_DRAIN_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
    Ok(())
}
