//! Where a check connects to (host and port), and the connection itself:
//! TCP, then TLS when the check asks for it.

use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A host (DNS name or IP address, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    /// Reads "host:port", "10.0.0.1:502" or "[::1]:443".
    pub(crate) fn parse(text: &str) -> Option<Target> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => {
                let v6 = v6.strip_suffix(']')?;
                v6.parse::<Ipv6Addr>().ok()?;
                v6
            }
            None => {
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                if !valid {
                    return None;
                }
                host
            }
        };
        Some(Target {
            host: host.to_owned(),
            port,
        })
    }

    /// The name a TLS client sends (SNI) and verifies the certificate
    /// against: an IP address or a DNS name.
    pub(crate) fn server_name(&self) -> Option<ServerName<'static>> {
        ServerName::try_from(self.host.clone()).ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS for one check: its configuration and the name it verifies.
#[derive(Debug, Clone)]
pub(crate) struct TlsTarget {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

/// A byte stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `target`, then performs the TLS handshake if `tls` is given.
/// The error is a sentence for a check summary.
pub(crate) async fn connect(
    target: &Target,
    tls: Option<&TlsTarget>,
) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let stream = TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake with {target} failed: {e}"))?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let check = |text: &str, expected: Option<(&str, u16)>| {
            let got = Target::parse(text);
            assert_eq!(
                got.as_ref().map(|t| (t.host.as_str(), t.port)),
                expected,
                "{text:?}"
            );
            if let Some(t) = got {
                assert_eq!(t.to_string(), text, "Display round-trips");
            }
        };
        check("10.20.0.1:502", Some(("10.20.0.1", 502)));
        check("db.example.org:5432", Some(("db.example.org", 5432)));
        check("[::1]:443", Some(("::1", 443)));
        check("host:0", None);
        check("host:65536", None);
        check("host", None);
        check(":80", None);
        check("::1:80", None);
        check("[::1:80", None);
        check("[nonsense]:80", None);
        check("a b:80", None);
        check("host:port", None);
    }
}
