//! The sandbox's control socket: `leitstand dev break primary` from
//! another terminal finds the running sandbox here. A Unix socket in a
//! folder only this user can enter (`$XDG_RUNTIME_DIR/leitstand-dev`, else
//! `/tmp/leitstand-dev-<uid>`), mode 0600; one request line of a few words
//! in, one answer line out, both bounded in size and time.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::Request;

/// A request line is a few words; anything longer is not one.
const MAX_REQUEST: u64 = 64;
/// An answer is one sentence.
const MAX_ANSWER: u64 = 1024;
/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(10);

/// This user's id: the owner of its own /proc entry (Linux).
fn uid() -> anyhow::Result<u32> {
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self to learn this user's id")?
        .uid())
}

/// The folder of the control socket, the same for both sides.
fn folder() -> anyhow::Result<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => Ok(dir.join("leitstand-dev")),
        _ => Ok(std::env::temp_dir().join(format!("leitstand-dev-{}", uid()?))),
    }
}

fn socket_path() -> anyhow::Result<PathBuf> {
    Ok(folder()?.join("control.sock"))
}

/// The bound control socket; dropping it removes the socket file.
#[derive(Debug)]
pub(super) struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Creates the folder (0700, ours, no symlink) and binds the socket;
    /// refuses when another sandbox answers on it.
    pub(super) fn bind() -> anyhow::Result<ControlSocket> {
        let folder = folder()?;
        match std::fs::DirBuilder::new().mode(0o700).create(&folder) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", folder.display()));
            }
        }
        let meta = std::fs::symlink_metadata(&folder)
            .with_context(|| format!("reading {}", folder.display()))?;
        if !meta.is_dir() || meta.uid() != uid()? || meta.mode() & 0o077 != 0 {
            anyhow::bail!(
                "{} must be a folder of this user that nobody else may enter (mode 0700); remove it or fix it",
                folder.display()
            );
        }
        let path = folder.join("control.sock");
        if std::fs::symlink_metadata(&path).is_ok() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                anyhow::bail!(
                    "a leitstand dev sandbox is already running (its control socket is {}); stop it with Ctrl-C first",
                    path.display()
                );
            }
            // Left behind by a sandbox that could not clean up.
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlSocket {
            path,
            listener: Some(listener),
        })
    }

    /// Answers requests with `handle` until the task is aborted.
    pub(super) fn serve<F, H>(&mut self, handle: H) -> JoinHandle<()>
    where
        H: Fn(Request) -> F + Send + Sync + 'static,
        F: Future<Output = Result<String, String>> + Send + 'static,
    {
        let listener = self.listener.take();
        let handle = std::sync::Arc::new(handle);
        tokio::spawn(async move {
            let Some(listener) = listener else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let handle = std::sync::Arc::clone(&handle);
                tokio::spawn(async move {
                    if let Err(e) = tokio::time::timeout(TIMEOUT, answer(stream, &*handle)).await {
                        tracing::warn!("a control request timed out: {e}");
                    }
                });
            }
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Empty unless another program put something there.
        if let Some(folder) = self.path.parent() {
            let _ = std::fs::remove_dir(folder);
        }
    }
}

async fn answer<F, H>(stream: UnixStream, handle: &H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Result<String, String>>,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let reply = match BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await
    {
        Err(e) => format!("error reading the request: {e}"),
        Ok(_) => match Request::parse(&line) {
            None => format!(
                "error not a request: {:?} (known: break|repair primary|backup)",
                line.trim_end()
            ),
            Some(request) => match handle(request).await {
                Ok(done) => {
                    tracing::info!("{done}");
                    format!("ok {done}")
                }
                Err(e) => format!("error {e}"),
            },
        },
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = write.shutdown().await;
}

/// `leitstand dev break|repair PATH`: asks the running sandbox.
#[allow(clippy::print_stdout)]
pub(super) async fn send(request: Request) -> ExitCode {
    match tokio::time::timeout(TIMEOUT, ask(request)).await {
        Ok(Ok(Ok(done))) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(refused))) => {
            tracing::error!("the sandbox refused: {refused}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            tracing::error!("the sandbox did not answer within {TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

async fn ask(request: Request) -> anyhow::Result<Result<String, String>> {
    let path = socket_path()?;
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            anyhow::bail!(
                "no leitstand dev sandbox is running (nothing answers on {}); start one with `leitstand dev`",
                path.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{}\n", request.to_line()).as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(read.take(MAX_ANSWER))
        .read_line(&mut line)
        .await?;
    let line = line.trim_end();
    if let Some(done) = line.strip_prefix("ok ") {
        Ok(Ok(done.to_owned()))
    } else if let Some(refused) = line.strip_prefix("error ") {
        Ok(Err(refused.to_owned()))
    } else {
        anyhow::bail!("the sandbox answered something unexpected: {line:?}")
    }
}
