//! Which browser pages may use the server: one rule, asked by the WebSocket
//! handshake (`transport::ws`) and by REST publishing (`http::rest`).
//!
//! A browser says which page a request comes from (`Origin`, and on newer
//! browsers `Sec-Fetch-Site`); websocat, curl and programs send neither and
//! are not checked. The rule stops one thing: another site's page acting
//! through a visitor's browser, which can reach a server on the visitor's own
//! machine or network that the other site cannot.
//!
//! The page's own address comes from the listener, never from the request.
//! A site can point a name of its own at this server's address (DNS
//! rebinding: `evil.example` resolves to the attacker's server, then to
//! 127.0.0.1), and its page then sends `Host: evil.example:8081` and `Origin:
//! http://evil.example`, which agree with each other; so "the Origin's host is
//! the Host's" proves nothing. By default an origin `scheme://host[:port]`
//! (scheme `http` or `https`; no port means 80 or 443) is allowed when its
//! host and port are:
//!
//! 1. the HTTP listener's bound address, where the chat page is served
//!    (`http://127.0.0.1:8080`);
//! 2. `localhost`, `127.0.0.1` or `[::1]` on the HTTP port, when the listener
//!    is on a loopback address or on every address: a page there was loaded
//!    from this machine, and browsers never ask DNS for `localhost`;
//! 3. a `--public-host HOST[:PORT]`, the name (or address) browsers use to
//!    reach the page, perhaps through a proxy: on its port, or, when it has
//!    none, on the HTTP port or the scheme's own (`https://chat.example.com`);
//! 4. when the listener is on every address (`0.0.0.0`, `[::]`): an IP
//!    address on the HTTP port that is also the host the request itself was
//!    sent to (`Host`). Which of the machine's addresses a browser used is not
//!    known in advance, but an address cannot be rebound: a browser that
//!    sends `Host: 192.0.2.7:8081` really connected to 192.0.2.7, and a page
//!    from `http://192.0.2.7:8080` came from this machine's HTTP port. A page
//!    reached by a host name needs rule 3, which the server says at start.
//!
//! `--allowed-origin ORIGIN` (repeatable) allows these exact origins besides
//! the page's own; `--allowed-origin '*'` allows any origin at all.
//!
//! A request without `Origin` is a program's, unless it says `Sec-Fetch-Site:
//! cross-site` or `same-site` (a browser on another page that left `Origin`
//! out): those are refused too, unless any origin is allowed.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use log::warn;

use crate::config::{ConfigError, Origins};

/// Where browsers reach the chat page: `--public-host HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicHost {
    host: Host,
    port: Option<u16>,
}

impl FromStr for PublicHost {
    type Err = ConfigError;

    /// `chat.example.com`, `chat.example.com:8443`, `192.0.2.7`, `[2001:db8::7]:80`.
    fn from_str(raw: &str) -> Result<PublicHost, ConfigError> {
        let bad = || ConfigError::BadPublicHost(raw.to_owned());
        // A bare IPv6 address has colons but no port.
        if let Ok(ip) = raw.parse::<Ipv6Addr>() {
            return Ok(PublicHost {
                host: Host::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (host, port) = split_authority(raw).ok_or_else(bad)?;
        if port == Some(0) {
            return Err(bad());
        }
        Ok(PublicHost { host, port })
    }
}

impl fmt::Display for PublicHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Why a browser request was refused (HTTP 403 on either transport).
#[derive(Debug, thiserror::Error)]
pub enum OriginRefused {
    /// An `Origin` the rule does not allow.
    #[error("origin {0:?} is not allowed here (see --public-host and --allowed-origin)")]
    Origin(String),
    /// No `Origin`, but the browser says the request comes from elsewhere.
    #[error("a browser request from another site (Sec-Fetch-Site: {0}) is not allowed here")]
    CrossSite(String),
}

/// The rule, built once at start from the settings and the bound HTTP
/// address (`Server::start`), then shared by every transport thread.
#[derive(Debug)]
pub struct OriginRule {
    /// Any origin allowed (`--allowed-origin '*'`).
    any: bool,
    /// Exact origins allowed besides the page's own, lowercase, no `/` at the end.
    extra: Vec<String>,
    /// Where the page is: rules 1 to 3.
    page: Vec<Place>,
    /// Rule 4: the listener is on every address.
    every_address: bool,
    /// The HTTP listener's port.
    http_port: u16,
}

impl OriginRule {
    /// The rule for a server whose HTTP listener is bound at `http_addr`.
    /// Says once, in the log, when browsers that use a host name will need
    /// `--public-host`.
    pub fn new(allowed: &Origins, public_hosts: &[PublicHost], http_addr: SocketAddr) -> Self {
        let http_port = http_addr.port();
        let ip = http_addr.ip().to_canonical();
        let mut page = vec![Place {
            host: Host::Ip(ip),
            port: Port::Is(http_port),
        }];
        if ip.is_loopback() || ip.is_unspecified() {
            for host in ["localhost", "127.0.0.1", "[::1]"] {
                let (host, _) = split_authority(host).expect("loopback names parse");
                page.push(Place {
                    host,
                    port: Port::Is(http_port),
                });
            }
        }
        for public in public_hosts {
            match public.port {
                Some(port) => page.push(Place {
                    host: public.host.clone(),
                    port: Port::Is(port),
                }),
                None => {
                    for port in [Port::Is(http_port), Port::SchemeDefault] {
                        page.push(Place {
                            host: public.host.clone(),
                            port,
                        });
                    }
                }
            }
        }
        let (any, extra) = match allowed {
            Origins::Any => (true, Vec::new()),
            Origins::Page => (false, Vec::new()),
            Origins::List(list) => (false, list.clone()),
        };
        let every_address = ip.is_unspecified();
        if every_address && public_hosts.is_empty() && !any {
            warn!(
                "HTTP listens on every address ({http_addr}): browsers may open the chat page \
                 by IP address or as localhost; a page opened by a host name is refused until \
                 --public-host names it (e.g. --public-host chat.example.com)"
            );
        }
        OriginRule {
            any,
            extra,
            page,
            every_address,
            http_port,
        }
    }

    /// Checks a browser's request by its `Origin`, `Sec-Fetch-Site` and
    /// `Host` headers (each as sent, if sent).
    pub fn check(
        &self,
        origin: Option<&str>,
        fetch_site: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), OriginRefused> {
        if self.any {
            return Ok(());
        }
        match origin {
            Some(origin) if self.allows(origin, host) => Ok(()),
            Some(origin) => Err(OriginRefused::Origin(origin.to_owned())),
            None => match fetch_site.map(str::trim) {
                Some(site)
                    if site.eq_ignore_ascii_case("cross-site")
                        || site.eq_ignore_ascii_case("same-site") =>
                {
                    Err(OriginRefused::CrossSite(site.to_owned()))
                }
                _ => Ok(()), // same-origin, none (typed by the user), or a program
            },
        }
    }

    /// Whether a page at `origin` may use the server; `host` is the request's
    /// `Host` header (used by rule 4 only).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let trimmed = origin.trim().trim_end_matches('/');
        if self.extra.iter().any(|o| o.eq_ignore_ascii_case(trimmed)) {
            return true;
        }
        let Some(origin) = Origin::parse(trimmed) else {
            return false; // `null`, `file://`, an extension's page...
        };
        if self.page.iter().any(|place| place.matches(&origin)) {
            return true;
        }
        // Rule 4: an address on the HTTP port, the very one this request was sent to.
        self.every_address
            && matches!(origin.host, Host::Ip(_))
            && origin.port == self.http_port
            && host
                .and_then(split_authority)
                .is_some_and(|(sent_to, _)| sent_to == origin.host)
    }
}

/// A host name (lowercase, without a final dot) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Which port a place is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Is(u16),
    /// The origin's scheme's own: 80 for `http`, 443 for `https`.
    SchemeDefault,
}

/// A host and port the chat page is served at.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Place {
    host: Host,
    port: Port,
}

impl Place {
    fn matches(&self, origin: &Origin) -> bool {
        let port = match self.port {
            Port::Is(port) => port,
            Port::SchemeDefault => origin.scheme_port,
        };
        self.host == origin.host && origin.port == port
    }
}

/// An `Origin` header as browsers write it: `scheme://host[:port]`.
struct Origin {
    host: Host,
    /// The port, the scheme's own when none is written.
    port: u16,
    /// The scheme's own port.
    scheme_port: u16,
}

impl Origin {
    fn parse(raw: &str) -> Option<Origin> {
        let (scheme, authority) = raw.split_once("://")?;
        let scheme_port = if scheme.eq_ignore_ascii_case("http") {
            80
        } else if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            return None;
        };
        let (host, port) = split_authority(authority)?;
        Some(Origin {
            host,
            port: port.unwrap_or(scheme_port),
            scheme_port,
        })
    }
}

/// Splits `host[:port]` (`[v6]:port` for IPv6) and checks both parts: a host
/// is an IP address or a name of letters, digits, `-`, `_` and dots; nothing
/// else (no path, no user, no spaces) is an authority.
fn split_authority(raw: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip = v6.parse::<Ipv6Addr>().ok()?;
        (Host::Ip(IpAddr::V6(ip).to_canonical()), after)
    } else {
        let end = raw.find(':').unwrap_or(raw.len());
        let name = raw[..end].trim_end_matches('.');
        let host = match name.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => {
                let fine = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
                if name.is_empty() || !name.bytes().all(fine) {
                    return None;
                }
                Host::Name(name.to_ascii_lowercase())
            }
        };
        (host, &raw[end..])
    };
    let port = match port {
        "" => None,
        _ => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(raw: &str) -> PublicHost {
        raw.parse().expect("a valid --public-host")
    }

    fn rule(allowed: Origins, public_hosts: &[&str], http: &str) -> OriginRule {
        let public_hosts: Vec<PublicHost> = public_hosts.iter().map(|h| public(h)).collect();
        OriginRule::new(&allowed, &public_hosts, http.parse().expect("an address"))
    }

    #[test]
    fn the_pages_own_address_is_allowed_and_a_rebound_name_is_not() {
        let local = rule(Origins::Page, &[], "127.0.0.1:8080");
        for good in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://LocalHost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(local.allows(good, Some("127.0.0.1:8081")), "{good}");
        }
        for (origin, host) in [
            ("http://evil.example", "evil.example:8081"),
            ("http://evil.example:8080", "evil.example:8081"),
            ("http://127.0.0.1:3000", "127.0.0.1:8081"),
            ("http://127.0.0.1", "127.0.0.1:8081"),
            ("http://127.0.0.1:8081", "127.0.0.1:8081"),
            ("null", "127.0.0.1:8081"),
            ("file://", "127.0.0.1:8081"),
            ("chrome-extension://abc", "127.0.0.1:8081"),
            ("http://127.0.0.1:8080@evil.example", "127.0.0.1:8081"),
            ("http://127.0.0.1:8080/x", "127.0.0.1:8081"),
        ] {
            assert!(!local.allows(origin, Some(host)), "{origin} from {host}");
        }
        // A listener on one LAN address: that address, and not loopback.
        let lan = rule(Origins::Page, &[], "192.0.2.7:8080");
        assert!(lan.allows("http://192.0.2.7:8080", None));
        assert!(!lan.allows("http://localhost:8080", Some("localhost:8081")));
        assert!(!lan.allows("http://192.0.2.8:8080", Some("192.0.2.8:8081")));
        // Port 80 is the one an http origin leaves out.
        let on_80 = rule(Origins::Page, &[], "127.0.0.1:80");
        assert!(on_80.allows("http://127.0.0.1", None));
        assert!(on_80.allows("http://localhost", None));
    }

    #[test]
    fn a_public_host_is_allowed_on_its_port_or_else_the_http_and_scheme_ports() {
        let proxied = rule(
            Origins::Page,
            &["Chat.Example.com", "alt.example:8443", "[2001:db8::7]"],
            "127.0.0.1:8080",
        );
        for good in [
            "https://chat.example.com",
            "http://chat.example.com",
            "http://chat.example.com:8080",
            "https://chat.example.com.",
            "https://alt.example:8443",
            "http://[2001:db8::7]:8080",
            "https://[2001:db8::7]",
        ] {
            assert!(proxied.allows(good, Some("evil.example")), "{good}");
        }
        for bad in [
            "https://chat.example.com:8443",
            "https://alt.example",
            "http://alt.example:8080",
            "https://evil.chat.example.com",
            "https://chat.example.com.evil.example",
        ] {
            assert!(!proxied.allows(bad, Some("chat.example.com")), "{bad}");
        }
    }

    #[test]
    fn on_every_address_an_ip_origin_must_be_the_address_the_request_was_sent_to() {
        let every = rule(Origins::Page, &[], "0.0.0.0:8080");
        assert!(every.allows("http://192.0.2.7:8080", Some("192.0.2.7:8081")));
        assert!(every.allows("http://localhost:8080", Some("localhost:8081")));
        assert!(every.allows("http://127.0.0.1:8080", None));
        // Another machine's page on the same port number, dialling this one.
        assert!(!every.allows("http://198.51.100.9:8080", Some("192.0.2.7:8081")));
        // A rebound name, whatever its Host says.
        assert!(!every.allows("http://evil.example:8080", Some("evil.example:8081")));
        // The address, but not the page's port.
        assert!(!every.allows("http://192.0.2.7:3000", Some("192.0.2.7:8081")));
        assert!(!every.allows("http://192.0.2.7:8080", None));
        let v6 = rule(Origins::Page, &[], "[::]:8080");
        assert!(v6.allows("http://[2001:db8::7]:8080", Some("[2001:db8::7]:8081")));
        assert!(v6.allows("http://192.0.2.7:8080", Some("192.0.2.7:8081")));
    }

    #[test]
    fn allowed_origins_add_to_the_page_and_a_star_allows_any() {
        let list = rule(
            Origins::List(vec!["https://app.example.com".into()]),
            &[],
            "127.0.0.1:8080",
        );
        assert!(list.allows("https://app.example.com", None));
        assert!(list.allows("https://APP.example.com/", None));
        assert!(list.allows("http://127.0.0.1:8080", None));
        assert!(!list.allows("https://other.example.com", None));
        let any = rule(Origins::Any, &[], "127.0.0.1:8080");
        assert!(any.allows("null", None));
        assert!(any
            .check(Some("http://evil.example"), Some("cross-site"), None)
            .is_ok());
    }

    #[test]
    fn a_request_without_origin_is_a_programs_unless_it_says_it_is_cross_site() {
        let local = rule(Origins::Page, &[], "127.0.0.1:8080");
        assert!(local.check(None, None, None).is_ok());
        assert!(local.check(None, Some("same-origin"), None).is_ok());
        assert!(local.check(None, Some("none"), None).is_ok());
        assert!(local.check(None, Some("cross-site"), None).is_err());
        assert!(local.check(None, Some("Same-Site"), None).is_err());
        assert!(local
            .check(Some("http://127.0.0.1:8080"), Some("same-origin"), None)
            .is_ok());
        assert!(local
            .check(Some("http://evil.example"), Some("same-origin"), None)
            .is_err());
    }

    #[test]
    fn public_hosts_parse_as_host_and_optional_port() {
        assert_eq!(public("chat.example.com").to_string(), "chat.example.com");
        assert_eq!(
            public("Chat.Example.com:8443").to_string(),
            "chat.example.com:8443"
        );
        assert_eq!(public("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(public("[2001:db8::7]:80").to_string(), "[2001:db8::7]:80");
        assert_eq!(public("2001:db8::7").to_string(), "[2001:db8::7]");
        for bad in [
            "",
            "https://chat.example.com",
            "chat.example.com/",
            "chat.example.com:0",
            "chat.example.com:http",
            "chat.example.com:99999",
            "user@chat.example.com",
            "two words",
            "[::1",
        ] {
            assert!(
                bad.parse::<PublicHost>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
