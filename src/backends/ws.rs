//! `ws-listener` and `ws-peer` (docs/wire.md §2.2): each netceptor message
//! is one binary WebSocket message, over plain TCP or TLS (`wss://`).
//!
//! tungstenite does the HTTP upgrade and reads frames (answering pings and
//! closes itself). Our messages are framed here and go through the
//! session's [`FrameSink`] to its writer thread; tungstenite's own frames
//! take the same sink once the upgrade is done, so every frame leaves in
//! order and no lock is held across socket I/O.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, warn};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderName, HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::framed::{FrameSink, FramedLink};
use super::redial::{self, Attempt};
use super::scope::{Poke, Scope};
use super::tls::BackendTls;
use crate::netceptor::Netceptor;
use crate::netceptor::codec::MAX_MESSAGE_LEN;
use crate::netceptor::link::LinkError;
use crate::netceptor::node::BackendParams;
use crate::tls::io::{self as tlsio, Shared, TlsReader, TlsWriter};

/// Go's HTTP server wants the request headers within 5 s.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages larger than a netceptor message can be are refused (the link
/// closes), so a peer cannot make us buffer without bound.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN))
}

/// The socket under a session. Reads come from the connection (through
/// TLS when there is TLS); writes go straight to it during the upgrade,
/// then to the session's sink.
struct WsIo {
    read: Box<dyn Read + Send>,
    write: Target,
}

enum Target {
    Direct(Box<dyn Write + Send>),
    Sink(Arc<FrameSink>),
}

impl Read for WsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Write for WsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.write {
            Target::Direct(w) => w.write(buf),
            Target::Sink(sink) => sink
                .send(buf)
                .map(|()| buf.len())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.write {
            Target::Direct(w) => w.flush(),
            Target::Sink(_) => Ok(()),
        }
    }
}

/// A connection's two halves, plain or through TLS, sharing one sink.
struct Halves {
    io: WsIo,
    sink: Arc<FrameSink>,
    tcp: TcpStream,
    /// The node IDs of the peer's certificate, when its claim is checked.
    cert_node_ids: Option<Vec<String>>,
}

fn plain_halves(tcp: TcpStream) -> io::Result<Halves> {
    Ok(Halves {
        io: WsIo {
            read: Box::new(tcp.try_clone()?),
            write: Target::Direct(Box::new(tcp.try_clone()?)),
        },
        sink: Arc::new(FrameSink::new(None)),
        tcp,
        cert_node_ids: None,
    })
}

/// The connection the upgrade runs over, plain or (with `tls`) after the
/// TLS handshake, with the upgrade's read timeout set. Set here, once: the
/// handshake uses its own timeout and clears it when done.
fn halves(tcp: TcpStream, tls: Option<&BackendTls>) -> Result<Halves, String> {
    let halves = match tls {
        None => plain_halves(tcp).map_err(|e| e.to_string())?,
        Some(tls) => tls_halves(tcp, tls)?,
    };
    halves
        .tcp
        .set_read_timeout(Some(UPGRADE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(halves)
}

/// The TLS handshake, and the peer certificate's node IDs if `tls` checks
/// them (as TCP's TLS does).
fn tls_halves(mut tcp: TcpStream, tls: &BackendTls) -> Result<Halves, String> {
    let mut conn = tls.connection().map_err(|e| e.to_string())?;
    tlsio::handshake(&mut conn, &mut tcp).map_err(|e| {
        format!(
            "TLS handshake failed: {}",
            super::tcp::handshake_error_text(&e)
        )
    })?;
    let cert_node_ids = tls.node_ids_to_check(&conn);
    tls_io(tcp, conn, cert_node_ids).map_err(|e| e.to_string())
}

fn tls_io(
    tcp: TcpStream,
    conn: rustls::Connection,
    cert_node_ids: Option<Vec<String>>,
) -> io::Result<Halves> {
    let shared = Shared::new(conn);
    let sink = Arc::new(FrameSink::new(None));
    let nudge = sink.clone();
    let reader = TlsReader::new(
        shared.clone(),
        tcp.try_clone()?,
        Box::new(move || nudge.nudge()),
    );
    Ok(Halves {
        io: WsIo {
            read: Box::new(reader),
            write: Target::Direct(Box::new(TlsWriter::new(shared, tcp.try_clone()?))),
        },
        sink,
        tcp,
        cert_node_ids,
    })
}

/// Binds now (so errors surface at startup) and upgrades connections for
/// `path` on their own threads.
pub fn listen(
    net: &Netceptor,
    addr: &str,
    path: &str,
    params: BackendParams,
    tls: Option<BackendTls>,
    scope: &Scope,
) -> Result<(), String> {
    let failed = |e: io::Error| format!("ws-listener {addr}: {e}");
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    debug!("Listening on WebSocket {local} path {path}");
    let (net, path) = (net.clone(), path.to_string());
    let serve = move |tcp: TcpStream| {
        if let Err(e) = accept(&net, params.clone(), tcp, tls.as_ref(), &path) {
            warn!("WebSocket connection refused: {e}");
        }
    };
    let what = "Error accepting WebSocket connection".to_string();
    let stopped = {
        let scope = scope.clone();
        move || scope.is_stopped()
    };
    let name = format!("ws-listen-{local}");
    let thread = crate::accept::spawn_until(name, listener, what, stopped, serve)
        .map_err(|e| e.to_string())?;
    scope.own_listener(Poke::Tcp(local), thread);
    Ok(())
}

// tungstenite's upgrade callback returns a whole HTTP response as its error.
#[allow(clippy::result_large_err)]
fn accept(
    net: &Netceptor,
    params: BackendParams,
    tcp: TcpStream,
    tls: Option<&BackendTls>,
    path: &str,
) -> Result<(), String> {
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let halves = halves(tcp, tls).map_err(|e| format!("{peer}: {e}"))?;
    let Halves {
        io,
        sink,
        tcp,
        cert_node_ids,
    } = halves;
    let check = |req: &Request, resp: Response| upgrade_allowed(req, path).map(|()| resp);
    let ws = tungstenite::accept_hdr_with_config(io, check, Some(ws_config()))
        .map_err(|e| format!("upgrade from {peer} failed: {e}"))?;
    tcp.set_read_timeout(None).map_err(|e| e.to_string())?;
    let upgraded = Upgraded {
        ws,
        sink,
        tcp,
        cert_node_ids,
    };
    run_session(net, params, upgraded, server_frame);
    Ok(())
}

#[allow(clippy::result_large_err)]
/// Go's ServeMux paths (`/` catches all, `/a/` a subtree, which `/a` is
/// redirected to, `/a` only itself), then gorilla's origin rule: an
/// `Origin` header must name the same host as `Host`.
fn upgrade_allowed(req: &Request, path: &str) -> Result<(), ErrorResponse> {
    let wanted = req.uri().path();
    let path_ok = if path.ends_with('/') {
        wanted.starts_with(path)
    } else {
        wanted == path
    };
    if !path_ok && path.strip_suffix('/') == Some(wanted) {
        let mut moved = refusal(StatusCode::MOVED_PERMANENTLY);
        if let Ok(to) = HeaderValue::from_str(path) {
            moved.headers_mut().insert("location", to);
        }
        return Err(moved);
    }
    if !path_ok {
        return Err(refusal(StatusCode::NOT_FOUND));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header("origin") {
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        let origin_host = origin_host.split('/').next().unwrap_or_default();
        if !header("host").is_some_and(|h| h.eq_ignore_ascii_case(origin_host)) {
            return Err(refusal(StatusCode::FORBIDDEN));
        }
    }
    Ok(())
}

fn refusal(status: StatusCode) -> ErrorResponse {
    let mut r = ErrorResponse::new(None);
    *r.status_mut() = status;
    r
}

/// How a `ws-peer` reaches its listener.
pub struct Dial {
    pub url: String,
    pub extra_header: Option<String>,
    /// For `wss://`: the TLS client (which knows the name the server must
    /// show).
    pub tls: Option<BackendTls>,
}

/// Keeps a session with the URL up, redialling with backoff.
pub fn dial(
    net: &Netceptor,
    target: Dial,
    redial: bool,
    params: BackendParams,
    scope: &Scope,
) -> Result<(), String> {
    let (net, scope) = (net.clone(), scope.clone());
    debug!("Running WebSocket peer connection {}", target.url);
    std::thread::Builder::new()
        .name(format!("ws-peer-{}", target.url))
        .spawn(move || {
            redial::run(redial, &scope, || match connect(&target) {
                Ok(upgraded) => {
                    run_session(&net, params.clone(), upgraded, client_frame);
                    Attempt::Ran
                }
                Err(e) => Attempt::Failed(e),
            })
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The host, port and scheme of a `ws://` or `wss://` URL.
pub fn url_parts(url: &str) -> Result<(bool, String, u16), String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(format!("{url}: not a ws:// or wss:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match crate::hostport::split_authority(authority) {
        Some((h, Some(p))) => (h, p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?),
        Some((h, None)) => (h, if secure { 443 } else { 80 }),
        None => return Err(format!("{url}: bad host {authority:?}")),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((secure, host.to_string(), port))
}

/// An upgraded connection, ready for its session.
struct Upgraded {
    ws: WebSocket<WsIo>,
    sink: Arc<FrameSink>,
    tcp: TcpStream,
    cert_node_ids: Option<Vec<String>>,
}

fn connect(target: &Dial) -> Result<Upgraded, String> {
    let (secure, host, port) = url_parts(&target.url)?;
    let tcp = super::proxy::connect(secure, &host, port, UPGRADE_TIMEOUT)?;
    let _ = tcp.set_nodelay(true);
    let tls = target.tls.as_ref().filter(|_| secure);
    let halves = halves(tcp, tls).map_err(|e| format!("{}: {e}", target.url))?;
    let Halves {
        io,
        sink,
        tcp,
        cert_node_ids,
    } = halves;
    let mut req = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{}: {e}", target.url))?;
    let scheme = if secure { "https" } else { "http" };
    let authority = target.url.splitn(3, '/').nth(2).unwrap_or_default();
    let authority = authority.split('/').next().unwrap_or_default();
    let origin = format!("{scheme}://{authority}");
    let headers = req.headers_mut();
    headers.insert(
        "origin",
        HeaderValue::from_str(&origin).map_err(|e| e.to_string())?,
    );
    if let Some(extra) = &target.extra_header {
        let (name, value) = extra
            .split_once(':')
            .ok_or_else(|| format!("extraheader {extra:?} is not Name:value"))?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        // Go's header writer trims the value.
        headers.insert(
            name,
            HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?,
        );
    }
    let (ws, _) = tungstenite::client::client_with_config(req, io, Some(ws_config()))
        .map_err(|e| format!("{}: upgrade failed: {e}", target.url))?;
    tcp.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(Upgraded {
        ws,
        sink,
        tcp,
        cert_node_ids,
    })
}

/// Runs one upgraded connection to its end: the writer thread drains the
/// sink; this thread reads messages into the router.
fn run_session(
    net: &Netceptor,
    mut params: BackendParams,
    upgraded: Upgraded,
    encode: super::framed::Encoder,
) {
    let Upgraded {
        mut ws,
        sink,
        tcp,
        cert_node_ids,
    } = upgraded;
    params.cert_node_ids = cert_node_ids;
    let Target::Direct(writer) =
        std::mem::replace(&mut ws.get_mut().write, Target::Sink(sink.clone()))
    else {
        return;
    };
    let closer = tcp.try_clone();
    let writer_sink = sink.clone();
    let spawned = std::thread::Builder::new()
        .name("ws-writer".into())
        .spawn(move || {
            if let Err(e) = writer_sink.run_writer(writer) {
                debug!("WebSocket send error: {e}");
            }
            if let Ok(t) = closer {
                let _ = t.shutdown(Shutdown::Both);
            }
        });
    if let Err(e) = spawned {
        error!("Backend error: cannot start writer: {e}");
        let _ = tcp.shutdown(Shutdown::Both);
        return;
    }
    let conn = net.conn_opened(params, Box::new(FramedLink::with_encoder(sink, encode)));
    loop {
        match incoming(ws.read()) {
            Incoming::Data(msg) => net.conn_message(conn, msg),
            Incoming::Control => {}
            Incoming::End => break,
            Incoming::Gone(e) => {
                debug!("WebSocket receive error: {e}");
                break;
            }
            Incoming::Refused(e) => {
                error!("Backend receiving error {e}");
                break;
            }
        }
    }
    net.conn_closed(conn);
    let _ = tcp.shutdown(Shutdown::Both);
}

/// What one read from the peer means for the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A netceptor message for the router.
    Data(Vec<u8>),
    /// A ping, pong or frame fragment (tungstenite answers pings itself).
    Control,
    /// The peer closed the link.
    End,
    /// The socket went away under us (our own close shows up here too).
    Gone(String),
    /// The peer broke the protocol (a bad opcode, a message over the size
    /// limit, bad UTF-8 in a text message): the link ends, logged.
    Refused(String),
}

/// Sorts out the result of `WebSocket::read`.
pub fn incoming(read: Result<Message, tungstenite::Error>) -> Incoming {
    use tungstenite::error::{Error, ProtocolError};
    match read {
        Ok(Message::Binary(data)) => Incoming::Data(data.to_vec()),
        // Go's reader takes any data message; so do we.
        Ok(Message::Text(text)) => Incoming::Data(text.as_bytes().to_vec()),
        Ok(Message::Close(_)) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
            Incoming::End
        }
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Control,
        Err(e @ (Error::Io(_) | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            Incoming::Gone(e.to_string())
        }
        Err(e) => Incoming::Refused(e.to_string()),
    }
}

/// One binary message from the listener side: FIN, opcode 2, no mask.
pub fn server_frame(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), LinkError> {
    frame(out, msg, None)
}

/// One binary message from the dialer side, which RFC 6455 makes mask.
pub fn client_frame(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), LinkError> {
    let mut key = [0u8; 4];
    getrandom::fill(&mut key).map_err(|_| LinkError::Closed)?;
    frame(out, msg, Some(key))
}

fn frame(out: &mut Vec<u8>, msg: &[u8], mask: Option<[u8; 4]>) -> Result<(), LinkError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(LinkError::TooLarge(msg.len()));
    }
    out.push(0x82);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match msg.len() {
        n @ 0..=125 => out.push(masked | n as u8),
        n => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(msg),
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(msg.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    Ok(())
}

/// A peer's bytes replayed through the backends' WebSocket reading: the
/// `ws_frames` fuzz target and the unit tests share it.
#[cfg(any(test, feature = "sim"))]
pub mod replay {
    use std::io::{self, Read, Write};

    use tungstenite::WebSocket;
    use tungstenite::protocol::Role;

    use super::{Incoming, client_frame, incoming, server_frame, ws_config};
    use crate::netceptor::codec::{self, MAX_MESSAGE_LEN};

    /// The peer's bytes to read; what we answer (pongs, closes) is dropped.
    struct Replay<'a>(&'a [u8]);

    impl Read for Replay<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Replay<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every data message of `bytes` read by the `role` side, then how the
    /// reading ended.
    pub fn read_all(bytes: &[u8], role: Role) -> Vec<Incoming> {
        let mut ws = WebSocket::from_raw_socket(Replay(bytes), role, Some(ws_config()));
        let mut got = Vec::new();
        loop {
            match incoming(ws.read()) {
                Incoming::Control => {}
                end @ (Incoming::End | Incoming::Gone(_) | Incoming::Refused(_)) => {
                    got.push(end);
                    return got;
                }
                data => got.push(data),
            }
        }
    }

    fn data(bytes: &[u8], role: Role) -> Vec<Vec<u8>> {
        let data = read_all(bytes, role).into_iter();
        data.filter_map(|m| match m {
            Incoming::Data(m) => Some(m),
            _ => None,
        })
        .collect()
    }

    /// Reading arbitrary bytes from either side never panics and passes
    /// only messages within the limit to the codec; anything within the
    /// limit that we frame reads back unchanged.
    pub fn check(bytes: &[u8]) {
        for role in [Role::Server, Role::Client] {
            for msg in data(bytes, role) {
                assert!(
                    msg.len() <= MAX_MESSAGE_LEN,
                    "an oversized message got through"
                );
                let _ = codec::decode(&msg);
            }
        }
        let msg = &bytes[..bytes.len().min(MAX_MESSAGE_LEN)];
        let (mut from_server, mut from_client) = (Vec::new(), Vec::new());
        server_frame(&mut from_server, msg).expect("a message within the limit frames");
        client_frame(&mut from_client, msg).expect("a message within the limit frames");
        assert_eq!(data(&from_server, Role::Client), [msg]);
        assert_eq!(data(&from_client, Role::Server), [msg]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::Role;

    /// Our frames, read back by tungstenite as the other side would.
    fn read_back(bytes: Vec<u8>, role: Role) -> Vec<Vec<u8>> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(bytes), role, None);
        let mut got = Vec::new();
        while let Ok(Message::Binary(b)) = ws.read() {
            got.push(b.to_vec());
        }
        got
    }

    #[test]
    fn frames_of_every_length_class_read_back() {
        let msgs = [vec![], vec![7; 125], vec![8; 126], vec![9; 65_535]];
        let (mut from_server, mut from_client) = (Vec::new(), Vec::new());
        for m in &msgs {
            server_frame(&mut from_server, m).unwrap();
            client_frame(&mut from_client, m).unwrap();
        }
        assert_eq!(read_back(from_server, Role::Client), msgs);
        assert_eq!(read_back(from_client, Role::Server), msgs);
        assert_eq!(
            server_frame(&mut Vec::new(), &[0; 65_536]),
            Err(LinkError::TooLarge(65_536))
        );
    }

    /// Everything a peer can send, read as the listener reads it.
    fn incoming_all(bytes: &[u8]) -> Vec<Incoming> {
        replay::read_all(bytes, Role::Server)
    }

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn peer_messages_are_data_ends_or_refusals() {
        let mut stream = masked(0x82, b"bin");
        stream.extend(masked(0x81, b"text"));
        stream.extend(masked(0x89, b"ping"));
        stream.extend(masked(0x88, &[3, 232]));
        assert_eq!(
            incoming_all(&stream),
            [
                Incoming::Data(b"bin".to_vec()),
                Incoming::Data(b"text".to_vec()),
                Incoming::End
            ]
        );
        // The stream simply stops: the socket went away.
        assert!(matches!(
            incoming_all(&masked(0x82, b"x"))[1],
            Incoming::Gone(_)
        ));
        let refused =
            |bytes: &[u8]| matches!(incoming_all(bytes).last(), Some(Incoming::Refused(_)));
        assert!(refused(&masked(0x83, b"bad opcode")), "reserved opcode");
        assert!(
            refused(&masked(0x81, b"\xff\xfe")),
            "text that is not UTF-8"
        );
        assert!(
            refused(&masked(0x82, &vec![0; MAX_MESSAGE_LEN + 1])),
            "oversized"
        );
        assert!(refused(&masked(0xc2, b"rsv1")), "a reserved bit");
        // Unmasked frames from a client break RFC 6455.
        assert!(refused(&[0x82, 1, 0]), "unmasked");
        // Fragments add up to a message over the limit.
        let mut parts = masked(0x02, &vec![0; MAX_MESSAGE_LEN]);
        parts.extend(masked(0x80, &[0; 1]));
        assert!(refused(&parts), "oversized fragments");
    }

    /// The `ws_frames` fuzz target's body ([`replay::check`]) over
    /// pseudo-random streams, so CI runs it too (`cargo fuzz run ws_frames`
    /// explores far more).
    #[test]
    fn random_streams_never_panic() {
        let mut rng = crate::random::IdGen::from_seed(7);
        let mut next = || rng.next_u64();
        for _ in 0..5_000 {
            let len = (next() % 300) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly well-formed heads, so the parser gets past the first byte.
            if data.len() > 1 {
                data[0] = 0x80 | (data[0] & 0x0f);
                data[1] |= 0x80;
            }
            replay::check(&data);
        }
    }

    #[test]
    fn urls_split_into_scheme_host_and_port() {
        assert_eq!(url_parts("ws://h:80/x").unwrap(), (false, "h".into(), 80));
        assert_eq!(
            url_parts("wss://example.com/p").unwrap(),
            (true, "example.com".into(), 443)
        );
        assert_eq!(
            url_parts("ws://[::1]:9/").unwrap(),
            (false, "::1".into(), 9)
        );
        assert_eq!(
            url_parts("ws://[::1]:8080/path/x").unwrap(),
            (false, "::1".into(), 8080)
        );
        assert_eq!(
            url_parts("wss://[::1]/path").unwrap(),
            (true, "::1".into(), 443)
        );
        assert!(url_parts("ws://[::1/").is_err());
        assert!(url_parts("http://h/").is_err());
        assert!(url_parts("ws://:1/").is_err());
    }

    #[test]
    fn paths_and_origins_as_go_checks_them() {
        let req = |path: &str, origin: Option<&str>| {
            let mut b = Request::builder().uri(path).header("host", "node:8080");
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(()).unwrap()
        };
        assert!(upgrade_allowed(&req("/anything", None), "/").is_ok());
        assert!(upgrade_allowed(&req("/mesh", None), "/mesh").is_ok());
        assert!(upgrade_allowed(&req("/mesh/x", None), "/mesh").is_err());
        assert!(upgrade_allowed(&req("/mesh/x", None), "/mesh/").is_ok());
        let moved = upgrade_allowed(&req("/mesh", None), "/mesh/").unwrap_err();
        assert_eq!(moved.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(moved.headers()["location"], "/mesh/");
        let missing = upgrade_allowed(&req("/mes", None), "/mesh/").unwrap_err();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        // gorilla compares host and port; an opaque "null" origin fails.
        assert!(upgrade_allowed(&req("/", Some("https://node:8080/x")), "/").is_ok());
        assert!(upgrade_allowed(&req("/", Some("http://node:8081")), "/").is_err());
        assert!(upgrade_allowed(&req("/", Some("null")), "/").is_err());
        assert!(upgrade_allowed(&req("/", Some("http://NODE:8080")), "/").is_ok());
        let refused = upgrade_allowed(&req("/", Some("http://evil:8080")), "/").unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
}
