//! `tcp-listener` and `tcp-peer`.

use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;

use log::{debug, error};

use super::framed::FrameSink;
use super::redial::{self, Attempt};
use super::scope::{Poke, Scope};
use super::session;
use super::tls::BackendTls;
use crate::netceptor::Netceptor;
use crate::netceptor::node::BackendParams;
use crate::tls::io as tls;

/// Binds the listening socket now (so errors surface at startup) and
/// accepts sessions on a thread that `scope` owns, over TLS when `tls` is
/// given.
pub fn listen(
    net: &Netceptor,
    addr: &str,
    params: BackendParams,
    tls: Option<BackendTls>,
    scope: &Scope,
) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("tcp-listener {addr}: {e}");
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    debug!("Listening on TCP {local}");
    let net = net.clone();
    let serve = move |stream| run_stream(&net, params.clone(), stream, tls.as_ref());
    let what = "Error accepting TCP connection".to_string();
    let stopped = {
        let scope = scope.clone();
        move || scope.is_stopped()
    };
    let name = format!("tcp-listen-{local}");
    let thread = crate::accept::spawn_until(name, listener, what, stopped, serve)
        .map_err(|e| e.to_string())?;
    scope.own_listener(Poke::Tcp(local), thread);
    Ok(())
}

fn run_stream(net: &Netceptor, params: BackendParams, stream: TcpStream, tls: Option<&BackendTls>) {
    let _ = stream.set_nodelay(true);
    let result = match tls {
        None => run_plain(net, params, stream),
        Some(tls) => run_tls(net, params, stream, tls),
    };
    if let Err(e) = result {
        error!("Backend error: {e}");
    }
}

fn run_plain(net: &Netceptor, params: BackendParams, stream: TcpStream) -> Result<(), String> {
    let clone = || {
        stream
            .try_clone()
            .map_err(|e| format!("cannot clone TCP socket: {e}"))
    };
    let (reader, writer) = (clone()?, clone()?);
    let direct = clone().ok().map(std::os::fd::OwnedFd::from);
    let sink = Arc::new(FrameSink::new(direct));
    session::run(net, params, reader, writer, sink, closer(stream));
    Ok(())
}

/// Completes the handshake, reads the node IDs from the peer's
/// certificate (for the node to check against the ID it claims), then
/// runs the session through the shared TLS state.
fn run_tls(
    net: &Netceptor,
    mut params: BackendParams,
    mut stream: TcpStream,
    tls: &BackendTls,
) -> Result<(), String> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let failed = |e: String| format!("TLS handshake with {peer} failed: {e}");
    let mut conn = tls.connection().map_err(|e| failed(e.to_string()))?;
    tls::handshake(&mut conn, &mut stream).map_err(|e| failed(handshake_error_text(&e)))?;
    params.cert_node_ids = tls.node_ids_to_check(&conn);
    let shared = tls::Shared::new(conn);
    let clone = || {
        stream
            .try_clone()
            .map_err(|e| format!("cannot clone TCP socket: {e}"))
    };
    let sink = Arc::new(FrameSink::new(None));
    let nudge = sink.clone();
    let on_records = Box::new(move || nudge.nudge());
    let reader = tls::TlsReader::new(shared.clone(), clone()?, on_records);
    let writer = tls::TlsWriter::new(shared, clone()?);
    session::run(net, params, reader, writer, sink, closer(stream));
    Ok(())
}

/// rustls reports a refused certificate inside an I/O error; this gives
/// Receptor's own words for it.
pub(super) fn handshake_error_text(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls_err) => crate::tls::error_text(tls_err),
        None => e.to_string(),
    }
}

/// What ends a session's reader: shutting the socket down.
fn closer(stream: TcpStream) -> impl Fn() + Send + Clone + 'static {
    let stream = Arc::new(stream);
    move || {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Dials `address` and keeps a session up, redialling with backoff when it
/// fails or ends (unless `redial` is off), until `scope` stops.
pub fn dial(
    net: &Netceptor,
    address: &str,
    redial: bool,
    params: BackendParams,
    tls: Option<BackendTls>,
    scope: &Scope,
) -> Result<(), String> {
    let (net, scope) = (net.clone(), scope.clone());
    let address = address.to_string();
    debug!("Running TCP peer connection {address}");
    std::thread::Builder::new()
        .name(format!("tcp-peer-{address}"))
        .spawn(move || dial_loop(&net, &address, redial, &params, tls.as_ref(), &scope))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The host part of a `host:port` address (`[v6]:port` too), which a TLS
/// server's certificate must name.
pub fn host_of(address: &str) -> &str {
    crate::hostport::split_authority(address).map_or(address, |(host, _)| host)
}

fn dial_loop(
    net: &Netceptor,
    address: &str,
    redial: bool,
    params: &BackendParams,
    tls: Option<&BackendTls>,
    scope: &Scope,
) {
    redial::run(redial, scope, || match connect(address) {
        Ok(stream) => {
            run_stream(net, params.clone(), stream, tls);
            Attempt::Ran
        }
        Err(e) => Attempt::Failed(e),
    });
}

/// Connects to the first address that answers; errors read like Go's
/// (`dial tcp 127.0.0.1:7323: connect: connection refused`).
fn connect(address: &str) -> Result<TcpStream, String> {
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| format!("dial tcp {address}: lookup: {e}"))?;
    let mut last = format!("dial tcp {address}: no addresses");
    for addr in addrs {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("dial tcp {addr}: connect: {}", os_error_text(&e)),
        }
    }
    Err(last)
}

/// The OS's text for an error, without Rust's " (os error N)" suffix and
/// in lower case, as Go prints it.
fn os_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(super::host_of("example.com:7323"), "example.com");
        assert_eq!(super::host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:7323"), "::1");
    }
}
