//! `tcp-listener` and `tcp-peer`.

use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, error, warn};

use super::framed::FrameSink;
use super::session;
use crate::netceptor::Netceptor;
use crate::netceptor::node::BackendParams;

const REDIAL_FIRST: Duration = Duration::from_secs(5);
const REDIAL_MAX: Duration = Duration::from_secs(20);

/// Binds the listening socket now (so errors surface at startup) and
/// accepts sessions on a thread.
pub fn listen(
    net: &Netceptor,
    addr: &str,
    params: BackendParams,
) -> Result<JoinHandle<()>, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("tcp-listener {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    debug!("Listening on TCP {local}");
    let net = net.clone();
    let serve = move |stream| run_stream(&net, params.clone(), stream);
    let what = "Error accepting TCP connection".to_string();
    crate::accept::spawn(format!("tcp-listen-{local}"), listener, what, serve)
        .map_err(|e| e.to_string())
}

fn run_stream(net: &Netceptor, params: BackendParams, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
        error!("Backend error: cannot clone TCP socket");
        return;
    };
    let direct = stream.try_clone().ok().map(std::os::fd::OwnedFd::from);
    let sink = Arc::new(FrameSink::new(direct));
    let closer = Arc::new(stream);
    session::run(net, params, reader, writer, sink, move || {
        let _ = closer.shutdown(Shutdown::Both);
    });
}

/// Dials `address` and keeps a session up, redialling with backoff when it
/// fails or ends (unless `redial` is off).
pub fn dial(
    net: &Netceptor,
    address: &str,
    redial: bool,
    params: BackendParams,
) -> Result<JoinHandle<()>, String> {
    let net = net.clone();
    let address = address.to_string();
    debug!("Running TCP peer connection {address}");
    std::thread::Builder::new()
        .name(format!("tcp-peer-{address}"))
        .spawn(move || dial_loop(&net, &address, redial, &params))
        .map_err(|e| e.to_string())
}

fn dial_loop(net: &Netceptor, address: &str, redial: bool, params: &BackendParams) {
    let mut backoff = REDIAL_FIRST;
    loop {
        match connect(address) {
            Ok(stream) => {
                backoff = REDIAL_FIRST;
                run_stream(net, params.clone(), stream);
                if !redial {
                    warn!("Backend connection exited");
                    return;
                }
                warn!("Backend connection exited (will retry)");
            }
            Err(e) if redial => warn!("Backend connection failed (will retry): {e}"),
            Err(e) => {
                error!("Backend connection failed: {e}");
                return;
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff.mul_f64(1.5)).min(REDIAL_MAX);
    }
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
