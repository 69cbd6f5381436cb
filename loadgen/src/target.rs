//! Where the load goes: a parsed `ws://` or `http://` URL, resolved and checked
//! to be a loopback address.
//!
//! The load generator is meant for benchmarks on one machine. Refusing anything
//! but loopback makes a mistyped URL fail loudly instead of sending thousands of
//! connections somewhere they were never meant to go.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::net::TcpStream;

/// A resolved endpoint plus the request target (`/path?query`).
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved loopback socket address.
    pub addr: SocketAddr,
    /// The value for the `Host` header.
    pub host_header: String,
    /// Path and query, e.g. `/ws?room=bench`.
    pub path: String,
    /// A text frame to send right after a WebSocket handshake, for servers
    /// where a client subscribes by message rather than by URL.
    pub join_message: Option<String>,
}

impl Target {
    /// Parses `scheme://host[:port][/path[?query]]` with one of the accepted
    /// schemes; the default port is 80.
    pub fn parse(url: &str, schemes: &[&str]) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url}: expected scheme://host:port/path"))?;
        if !schemes.contains(&scheme) {
            return Err(format!("{url}: scheme must be one of {schemes:?}"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(format!("{url}: missing host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {with_port}: {e}"))?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| format!("{url}: only loopback targets are allowed"))?;
        Ok(Target {
            addr,
            host_header: authority.to_string(),
            path,
            join_message: None,
        })
    }

    /// The same endpoint with another request target.
    pub fn with_path(&self, path: String) -> Self {
        Target {
            path,
            ..self.clone()
        }
    }
}

/// Opens a TCP connection with a timeout and Nagle off (messages are small and
/// latency is what is measured).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e.kind())),
        Ok(Ok(s)) => s,
    };
    stream
        .set_nodelay(true)
        .map_err(|e| ConnectError::Io(e.kind()))?;
    Ok(stream)
}

/// Why a connection attempt did not produce a usable stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// TCP connect did not finish within the connect timeout.
    Timeout,
    /// The server accepted but did not answer the handshake in time.
    HandshakeTimeout,
    /// A socket error.
    Io(std::io::ErrorKind),
    /// The server answered the handshake with this HTTP status (503 when full).
    Status(u16),
    /// The server's answer could not be parsed or closed early.
    BadResponse,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => write!(f, "connect_timeout"),
            ConnectError::HandshakeTimeout => write!(f, "handshake_timeout"),
            ConnectError::Io(kind) => write!(f, "io:{kind:?}"),
            ConnectError::Status(code) => write!(f, "http:{code}"),
            ConnectError::BadResponse => write!(f, "bad_response"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_url_with_query() {
        let t = Target::parse("ws://127.0.0.1:8081/ws?room=bench", &["ws"]).unwrap();
        assert_eq!(t.addr.port(), 8081);
        assert_eq!(t.host_header, "127.0.0.1:8081");
        assert_eq!(t.path, "/ws?room=bench");
    }

    #[test]
    fn query_without_path_gets_a_slash() {
        let t = Target::parse("ws://127.0.0.1:9/?a=1", &["ws"]).unwrap();
        assert_eq!(t.path, "/?a=1");
        let t = Target::parse("ws://127.0.0.1:9?a=1", &["ws"]).unwrap();
        assert_eq!(t.path, "/?a=1");
    }

    #[test]
    fn rejects_other_schemes_and_non_loopback_hosts() {
        assert!(Target::parse("http://127.0.0.1:1/", &["ws"]).is_err());
        assert!(Target::parse("ws://10.0.0.1:80/", &["ws"]).is_err());
        assert!(Target::parse("ws://:80/", &["ws"]).is_err());
    }
}
