//! A `ws-peer` through an HTTP proxy, as Go's dialer does it (gorilla's
//! `Dialer` with `http.ProxyFromEnvironment`): `HTTP_PROXY` for `ws://`,
//! `HTTPS_PROXY` for `wss://` (each upper case first, then lower case; an
//! empty value counts as unset), `NO_PROXY` exceptions, and loopback targets
//! (`localhost`, 127.0.0.0/8, ::1) never proxied. Both schemes tunnel with
//! `CONNECT host:port`; credentials in the proxy URL go as
//! `Proxy-Authorization: Basic`, and only when a password is given.
//!
//! Like Go, the environment is read once, at the first dial. Only `http://`
//! proxies are spoken (gorilla also knows SOCKS5; we refuse it clearly).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use log::debug;

use crate::hostport;

/// A proxy's reply head larger than this is refused.
const MAX_REPLY_HEAD: usize = 8 * 1024;

/// The proxy settings of the environment.
#[derive(Debug, Default)]
pub struct ProxyEnv {
    /// `HTTP_PROXY` and `HTTPS_PROXY` when set, parsed once rather than
    /// at every dial; a bad one fails each dial it would carry.
    http: Option<Result<ProxyUrl, ProxyError>>,
    https: Option<Result<ProxyUrl, ProxyError>>,
    no_proxy: NoProxy,
}

impl ProxyEnv {
    /// The process's settings, read at the first call.
    pub fn get() -> &'static ProxyEnv {
        static ENV: OnceLock<ProxyEnv> = OnceLock::new();
        ENV.get_or_init(|| ProxyEnv::from_vars(|name| std::env::var(name).ok()))
    }

    /// Settings from `var` (an environment lookup).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let any = |names: [&str; 2]| names.iter().filter_map(|n| var(n)).find(|v| !v.is_empty());
        let url = |names| any(names).map(|v| ProxyUrl::parse(&v));
        ProxyEnv {
            http: url(["HTTP_PROXY", "http_proxy"]),
            https: url(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: NoProxy::parse(&any(["NO_PROXY", "no_proxy"]).unwrap_or_default()),
        }
    }

    /// The proxy to reach `host:port` through, if any.
    pub fn proxy_for(
        &self,
        secure: bool,
        host: &str,
        port: u16,
    ) -> Result<Option<&ProxyUrl>, ProxyError> {
        let proxy = if secure { &self.https } else { &self.http };
        match proxy {
            Some(proxy) if self.no_proxy.use_proxy(host, port) => {
                proxy.as_ref().map(Some).map_err(Clone::clone)
            }
            _ => Ok(None),
        }
    }
}

/// What can go wrong on the way through a proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The proxy variable does not parse as a URL.
    BadUrl(String),
    /// A proxy scheme we do not speak (e.g. `socks5`).
    Scheme(String),
    /// The proxy answered CONNECT with something other than 200.
    Refused { proxy: String, status: String },
    /// The proxy's reply is not an HTTP response head we can read.
    BadReply { proxy: String },
    /// The socket to the proxy failed.
    Io { proxy: String, error: String },
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::BadUrl(u) => write!(f, "invalid proxy address {u:?}"),
            ProxyError::Scheme(s) => write!(f, "proxy scheme {s:?} is not supported"),
            ProxyError::Refused { proxy, status } => {
                write!(f, "proxy {proxy} refused the tunnel: {status}")
            }
            ProxyError::BadReply { proxy } => write!(f, "proxy {proxy}: malformed reply"),
            ProxyError::Io { proxy, error } => write!(f, "proxy {proxy}: {error}"),
        }
    }
}

/// An `http://[user[:password]@]host[:port]` proxy.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
    /// The `Proxy-Authorization` value, when the URL has a password.
    pub auth: Option<String>,
}

impl ProxyUrl {
    /// Go's rule: a value without a known scheme is tried as `http://` + it.
    pub fn parse(raw: &str) -> Result<ProxyUrl, ProxyError> {
        let bad = || ProxyError::BadUrl(raw.to_string());
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, r)) if ["http", "https", "socks5", "socks5h"].contains(&s) => (s, r),
            _ => ("http", raw),
        };
        if scheme != "http" {
            return Err(ProxyError::Scheme(scheme.to_string()));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport::split_authority(hostport).ok_or_else(bad)? {
            (h, Some(p)) => (h, p.parse().map_err(|_| bad())?),
            (h, None) => (h, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let auth = match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, pass))) => {
                let (user, pass) = (
                    unescape(user).ok_or_else(bad)?,
                    unescape(pass).ok_or_else(bad)?,
                );
                Some(format!(
                    "Basic {}",
                    crate::base64::encode(
                        format!("{user}:{pass}").as_bytes(),
                        crate::base64::Form::Standard
                    )
                ))
            }
            _ => None,
        };
        Ok(ProxyUrl {
            host: host.to_string(),
            port,
            auth,
        })
    }

    fn addr(&self) -> String {
        hostport::join(&self.host, self.port)
    }
}

/// `NO_PROXY`: comma-separated IPs, CIDRs, `host:port`s and domains
/// (`example.com` covers itself and its subdomains, `.example.com` and
/// `*.example.com` only the subdomains), or `*` for everything.
#[derive(Debug, Default)]
struct NoProxy {
    rules: Vec<Rule>,
}

#[derive(Debug)]
enum Rule {
    All,
    Cidr(IpAddr, u8),
    /// An IP, on one port or (empty) any.
    Ip(IpAddr, String),
    /// A domain suffix starting with `.`; `exact` also matches the bare
    /// name; on one port or (empty) any.
    Domain {
        suffix: String,
        exact: bool,
        port: String,
    },
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut rules = Vec::new();
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == "*" {
                return NoProxy {
                    rules: vec![Rule::All],
                };
            }
            if let Some(rule) = Rule::parse(&entry) {
                rules.push(rule);
            }
        }
        NoProxy { rules }
    }

    /// Whether `host:port` goes through the proxy.
    fn use_proxy(&self, host: &str, port: u16) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        if host == "localhost" || ip.is_some_and(|ip| canonical(ip).is_loopback()) {
            return false;
        }
        let port = port.to_string();
        !self.rules.iter().any(|r| r.matches(&host, &port, ip))
    }
}

impl Rule {
    fn parse(entry: &str) -> Option<Rule> {
        if entry.is_empty() {
            return None;
        }
        if let Some(cidr) = parse_cidr(entry) {
            return Some(cidr);
        }
        let (host, port) = match hostport::split(entry) {
            Some(("", _)) => return None,
            Some((h, p)) => (h, p.to_string()),
            None => (entry, String::new()),
        };
        if let Ok(ip) = host.parse() {
            return Some(Rule::Ip(ip, port));
        }
        let bare = host.strip_prefix('*').filter(|h| h.starts_with('.'));
        let host = bare.unwrap_or(host);
        let exact = !host.starts_with('.');
        let suffix = if exact {
            format!(".{host}")
        } else {
            host.to_string()
        };
        Some(Rule::Domain {
            suffix,
            exact,
            port,
        })
    }

    fn matches(&self, host: &str, port: &str, ip: Option<IpAddr>) -> bool {
        let port_ok = |want: &str| want.is_empty() || want == port;
        match self {
            Rule::All => true,
            Rule::Cidr(net, bits) => ip.is_some_and(|ip| in_cidr(ip, *net, *bits)),
            Rule::Ip(want, p) => {
                ip.is_some_and(|ip| canonical(ip) == canonical(*want)) && port_ok(p)
            }
            Rule::Domain {
                suffix,
                exact,
                port: p,
            } => {
                (host.ends_with(suffix.as_str()) || (*exact && host == &suffix[1..])) && port_ok(p)
            }
        }
    }
}

fn parse_cidr(entry: &str) -> Option<Rule> {
    let (ip, bits) = entry.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some(Rule::Cidr(ip, bits))
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address, as in Go.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let bits = u32::from(bits);
    match (canonical(ip), canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `%XX` escapes of a URL's userinfo; `None` when one is malformed.
fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The request that opens a tunnel to `target` (`host:port`).
pub fn connect_request(target: &str, auth: Option<&str>) -> String {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = auth {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Judges a complete reply head (up to and including the blank line):
/// the tunnel is open on `200`, and refused on any other status.
pub fn check_reply(proxy: &str, head: &[u8]) -> Result<(), ProxyError> {
    let bad = || ProxyError::BadReply {
        proxy: proxy.to_string(),
    };
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let status_line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 || code.parse::<u16>().is_err() {
        return Err(bad());
    }
    if code == "200" {
        return Ok(());
    }
    let reason = parts.next().unwrap_or_default();
    Err(ProxyError::Refused {
        proxy: proxy.to_string(),
        status: format!("{code} {reason}").trim_end().to_string(),
    })
}

/// Connects a `ws-peer` to `host:port`, through the environment's proxy
/// for it when there is one.
pub fn connect(
    secure: bool,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let target = hostport::join(host, port);
    let Some(proxy) = ProxyEnv::get()
        .proxy_for(secure, host, port)
        .map_err(|e| e.to_string())?
    else {
        return TcpStream::connect((host, port)).map_err(|e| format!("dial tcp {target}: {e}"));
    };
    debug!("Dialing {target} through proxy {}", proxy.addr());
    tunnel(proxy, &target, timeout).map_err(|e| format!("dial {target}: {e}"))
}

fn tunnel(proxy: &ProxyUrl, target: &str, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let addr = proxy.addr();
    let io = |e: std::io::Error| ProxyError::Io {
        proxy: addr.clone(),
        error: e.to_string(),
    };
    let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port)).map_err(io)?;
    tcp.set_read_timeout(Some(timeout)).map_err(io)?;
    tcp.write_all(connect_request(target, proxy.auth.as_deref()).as_bytes())
        .map_err(io)?;
    let head = read_head(&mut tcp)
        .map_err(io)?
        .ok_or(ProxyError::BadReply {
            proxy: addr.clone(),
        })?;
    check_reply(&addr, &head)?;
    Ok(tcp)
}

/// Reads the reply head a byte at a time, so nothing the tunnel carries
/// after it is consumed; `None` if it ends early or grows too long.
fn read_head(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_REPLY_HEAD || r.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        ProxyEnv::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn proxied(e: &ProxyEnv, secure: bool, host: &str, port: u16) -> Option<String> {
        e.proxy_for(secure, host, port).unwrap().map(|p| p.addr())
    }

    #[test]
    fn each_scheme_has_its_variable_upper_case_first() {
        let e = env(&[
            ("http_proxy", "lower:1"),
            ("HTTP_PROXY", ""),
            ("HTTPS_PROXY", "upper:2"),
            ("https_proxy", "lower:3"),
        ]);
        assert_eq!(proxied(&e, false, "mesh", 80).as_deref(), Some("lower:1"));
        assert_eq!(proxied(&e, true, "mesh", 443).as_deref(), Some("upper:2"));
        let only_http = env(&[("HTTP_PROXY", "p:1")]);
        assert_eq!(proxied(&only_http, true, "mesh", 443), None);
    }

    #[test]
    fn loopback_targets_are_never_proxied() {
        let e = env(&[("HTTP_PROXY", "p:1")]);
        for host in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(proxied(&e, false, host, 80), None, "{host}");
        }
        // A name that merely resolves to loopback is not recognised.
        assert!(proxied(&e, false, "localhost.localdomain", 80).is_some());
    }

    #[test]
    fn no_proxy_rules_as_go_matches_them() {
        let e = env(&[
            ("HTTP_PROXY", "p:1"),
            (
                "no_proxy",
                " Example.com, .sub.org,*.star.net, host.io:8080, 10.0.0.0/8, 192.168.1.1, \
                 [2001:db8::1]:9, 172.16.0.5:99, :7, ",
            ),
        ]);
        let bypass = |host: &str, port: u16| proxied(&e, false, host, port).is_none();
        assert!(bypass("example.com", 80));
        assert!(bypass("a.b.example.com", 80));
        assert!(!bypass("notexample.com", 80));
        assert!(!bypass("sub.org", 80));
        assert!(bypass("x.sub.org", 80));
        assert!(!bypass("star.net", 80));
        assert!(bypass("x.star.net", 80));
        assert!(bypass("host.io", 8080));
        assert!(!bypass("host.io", 80));
        assert!(bypass("10.2.3.4", 80));
        assert!(!bypass("11.2.3.4", 80));
        assert!(bypass("192.168.1.1", 1));
        assert!(bypass("2001:db8::1", 9));
        assert!(!bypass("2001:db8::1", 10));
        assert!(bypass("172.16.0.5", 99));
        assert!(!bypass("172.16.0.5", 98));
        assert!(!bypass("other", 7));
    }

    #[test]
    fn a_bad_proxy_variable_fails_only_the_dials_it_would_carry() {
        let e = env(&[("HTTP_PROXY", "socks5://p:1"), ("NO_PROXY", "near")]);
        let scheme = Err(ProxyError::Scheme("socks5".into()));
        assert_eq!(e.proxy_for(false, "far", 80), scheme);
        assert_eq!(e.proxy_for(false, "near", 80), Ok(None));
        assert_eq!(e.proxy_for(true, "far", 443), Ok(None));
    }

    #[test]
    fn a_star_turns_the_proxy_off() {
        let e = env(&[("HTTPS_PROXY", "p:1"), ("NO_PROXY", "a.com, *")]);
        assert_eq!(proxied(&e, true, "anything", 443), None);
        let e = env(&[("HTTPS_PROXY", "p:1"), ("NO_PROXY", "*.a.com")]);
        assert!(proxied(&e, true, "b.com", 443).is_some());
    }

    #[test]
    fn proxy_urls_with_and_without_scheme_port_and_credentials() {
        let url = |s: &str| ProxyUrl::parse(s);
        assert_eq!(
            url("127.0.0.1:3128").unwrap(),
            ProxyUrl {
                host: "127.0.0.1".into(),
                port: 3128,
                auth: None
            }
        );
        assert_eq!(url("http://proxy/").unwrap().addr(), "proxy:80");
        assert_eq!(url("http://[::1]:8/").unwrap().addr(), "[::1]:8");
        // "Aladdin:open sesame", RFC 7617's example, with an escape.
        assert_eq!(
            url("http://Aladdin:open%20sesame@p:1")
                .unwrap()
                .auth
                .as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        // Go sends no credentials without a password.
        assert_eq!(url("http://user@p:1").unwrap().auth, None);
        assert_eq!(
            url("socks5://p:1"),
            Err(ProxyError::Scheme("socks5".into()))
        );
        assert_eq!(
            url("http://p:x"),
            Err(ProxyError::BadUrl("http://p:x".into()))
        );
        assert_eq!(
            url("http://u:%zz@p:1"),
            Err(ProxyError::BadUrl("http://u:%zz@p:1".into()))
        );
        assert_eq!(
            url("http://:1"),
            Err(ProxyError::BadUrl("http://:1".into()))
        );
    }

    #[test]
    fn the_connect_request_names_the_target_twice() {
        assert_eq!(
            connect_request("mesh:7", Some("Basic eA==")),
            "CONNECT mesh:7 HTTP/1.1\r\nHost: mesh:7\r\nProxy-Authorization: Basic eA==\r\n\r\n"
        );
    }

    #[test]
    fn replies_open_the_tunnel_only_on_200() {
        assert_eq!(
            check_reply("p", b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check_reply("p", b"HTTP/1.0 200\r\nVia: x\r\n\r\n"), Ok(()));
        assert_eq!(
            check_reply("p", b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Err(ProxyError::Refused {
                proxy: "p".into(),
                status: "407 Proxy Authentication Required".into()
            })
        );
        for junk in [
            &b"SSH-2.0\r\n\r\n"[..],
            b"HTTP/1.1 2000 x\r\n\r\n",
            b"\xff\r\n\r\n",
        ] {
            assert_eq!(
                check_reply("p", junk),
                Err(ProxyError::BadReply { proxy: "p".into() })
            );
        }
    }

    #[test]
    fn the_head_is_read_without_what_follows_and_every_prefix_is_short() {
        let reply = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nTUNNEL";
        let mut r = &reply[..];
        assert_eq!(
            read_head(&mut r).unwrap().unwrap(),
            &reply[..reply.len() - 6]
        );
        assert_eq!(r, b"TUNNEL");
        for n in 0..reply.len() - 6 {
            assert_eq!(read_head(&mut &reply[..n]).unwrap(), None, "prefix {n}");
        }
        let endless = vec![b'a'; MAX_REPLY_HEAD + 1];
        assert_eq!(read_head(&mut &endless[..]).unwrap(), None);
    }
}
