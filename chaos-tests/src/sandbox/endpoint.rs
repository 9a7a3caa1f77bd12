//! A local endpoint standing in for one redundant path: the agents' tcp
//! checks reach it while it is open; closing its listening socket is the
//! path breaking. Reopened on the same port, so the checks' target stays.

use std::net::SocketAddr;

use anyhow::{Context, anyhow};
use tokio::sync::oneshot;

#[derive(Debug)]
pub(crate) struct Endpoint {
    name: String,
    address: SocketAddr,
    /// Some while open: asks the task to close and answers the close time
    /// (unix ns).
    close: Option<oneshot::Sender<oneshot::Sender<i64>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    pub(crate) async fn open(name: &str, address: &str) -> anyhow::Result<Endpoint> {
        // tokio sets SO_REUSEADDR: connections closed first sit in
        // TIME_WAIT on this port and must not stop a rebind.
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("bind the endpoint of path {name} on {address}"))?;
        let address = listener.local_addr()?;
        let (close, closed) = oneshot::channel::<oneshot::Sender<i64>>();
        let task = tokio::spawn(async move {
            let mut closed = closed;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((connection, _)) = accepted {
                            drop(connection);
                        }
                    }
                    reply = &mut closed => {
                        // Read right before the listening socket closes.
                        let at = super::unix_ns();
                        drop(listener);
                        if let Ok(reply) = reply {
                            let _ = reply.send(at);
                        }
                        return;
                    }
                }
            }
        });
        Ok(Endpoint {
            name: name.to_owned(),
            address,
            close: Some(close),
            task: Some(task),
        })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn is_open(&self) -> bool {
        self.close.is_some()
    }

    /// Closes the listening socket; returns when (unix ns).
    pub(crate) async fn close(&mut self) -> anyhow::Result<i64> {
        let close = self
            .close
            .take()
            .with_context(|| format!("path {} is already broken", self.name))?;
        let (reply, at) = oneshot::channel();
        close
            .send(reply)
            .map_err(|_| anyhow!("the endpoint task of path {} has ended", self.name))?;
        let at = at
            .await
            .with_context(|| format!("the endpoint task of path {} ended", self.name))?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(at)
    }

    pub(crate) async fn reopen(&mut self) -> anyhow::Result<()> {
        if self.is_open() {
            return Ok(());
        }
        *self = Endpoint::open(&self.name, &self.address.to_string()).await?;
        Ok(())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
