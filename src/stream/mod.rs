//! Reliable streams between services on different nodes: QUIC carried in
//! mesh datagrams, as Go nodes do it (docs/wire.md §11).
//!
//! A [`Listener`] serves one named service; [`dial`] opens one stream to a
//! remote service from a fresh ephemeral service. Each runs an endpoint
//! driver thread; callers get blocking [`Stream`] handles. Between two of
//! our nodes a connection may carry many streams ([`tls::ALPN_STREAMS`]):
//! a listener accepts each as if it came alone, and [`SharedConns`] opens
//! further streams on a dialed connection instead of dialing again.

mod conn;
mod driver;
mod endpoint;
mod error;
mod pipe;
mod shared;
pub mod tls;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
use crate::tls::{ClientTls, ServerTls};
pub use driver::Transport;
use endpoint::Endpoint;
pub use error::DialError;
pub use pipe::Stream;
pub use shared::SharedConns;

/// How long a dial may take, handshake included (Go's handshake timeout).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts streams on one mesh service.
pub struct Listener {
    accepted: Receiver<Stream>,
    _gone: Sender<()>,
}

impl Listener {
    /// Binds `service` on this node; `advertise` announces it to the mesh.
    pub fn bind(
        net: &Netceptor,
        service: &str,
        advertise: Option<Advertise>,
    ) -> Result<Listener, String> {
        Self::bind_tls(net, service, advertise, None)
    }

    /// As [`Listener::bind`], with the service's `tls-server` section when
    /// it has one (else the insecure mode Go uses for plain services).
    pub fn bind_tls(
        net: &Netceptor,
        service: &str,
        advertise: Option<Advertise>,
        server: Option<&ServerTls>,
    ) -> Result<Listener, String> {
        let quic = match server {
            Some(s) => tls::quic_server(s.config().map_err(|e| e.to_string())?, tls::IDLE_TIMEOUT)?,
            None => tls::server_config(tls::IDLE_TIMEOUT)?,
        };
        let pc = net.bind(Some(service), advertise)?;
        Self::serve_with(pc, &format!("stream-{service}"), quic)
    }

    /// Serves streams over any datagram transport (tests use in-memory ones).
    pub fn serve<T: Transport>(
        transport: T,
        thread_name: &str,
        idle: Duration,
    ) -> Result<Listener, String> {
        Self::serve_with(transport, thread_name, tls::server_config(idle)?)
    }

    fn serve_with<T: Transport>(
        transport: T,
        thread_name: &str,
        quic: std::sync::Arc<quinn_proto::ServerConfig>,
    ) -> Result<Listener, String> {
        let (accepted_tx, accepted) = unbounded();
        let (gone_tx, gone_rx) = bounded(0);
        let (cmds_tx, cmds) = unbounded();
        let core = Endpoint::listener(quic, accepted_tx, cmds_tx);
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || driver::run(transport, core, cmds, gone_rx))
            .map_err(|e| e.to_string())?;
        Ok(Listener {
            accepted,
            _gone: gone_tx,
        })
    }

    /// Blocks until a stream arrives.
    pub fn accept(&self) -> Result<Stream, String> {
        self.accepted
            .recv()
            .map_err(|_| "listener closed".to_string())
    }

    /// The channel of accepted streams, for `select!`.
    pub fn incoming(&self) -> &Receiver<Stream> {
        &self.accepted
    }
}

/// Opens a stream to `service` on `node`.
pub fn dial(
    net: &Netceptor,
    node: &str,
    service: &str,
    timeout: Duration,
) -> Result<Stream, DialError> {
    dial_tls(net, node, service, timeout, None)
}

/// As [`dial`], with a `tls-client` section when the service expects TLS:
/// the server must then show a certificate for `node` (Go's rules).
pub fn dial_tls(
    net: &Netceptor,
    node: &str,
    service: &str,
    timeout: Duration,
    client: Option<&ClientTls>,
) -> Result<Stream, DialError> {
    dial_offering(net, (node, service), timeout, client, false)
}

/// As [`dial_tls`]; `many`: offer to carry many streams on the connection
/// (a node of ours accepts).
fn dial_offering(
    net: &Netceptor,
    (node, service): (&str, &str),
    timeout: Duration,
    client: Option<&ClientTls>,
    many: bool,
) -> Result<Stream, DialError> {
    // Fail at once, as ping does, rather than wait out the handshake.
    use crate::netceptor::names;
    names::check_target_node(node)
        .map_err(|e| DialError::BadName(format!("node name {} {e}", names::shown(node))))?;
    names::check_service(service)
        .map_err(|e| DialError::BadName(format!("service name {} {e}", names::shown(service))))?;
    if !net.has_route(node) {
        return Err(DialError::NoRoute);
    }
    let node = crate::netceptor::addr::resolve(node, net.node_id());
    let (cfg, server_name) = match client {
        None => (
            tls::client_config(tls::IDLE_TIMEOUT, many).map_err(DialError::Tls)?,
            tls::sni_for(net.node_id()),
        ),
        Some(c) => {
            let (rustls_cfg, _) = c
                .for_node(node)
                .map_err(|e| DialError::Tls(e.to_string()))?;
            let quic =
                tls::quic_client(rustls_cfg, tls::IDLE_TIMEOUT, many).map_err(DialError::Tls)?;
            (quic, target_server_name(node))
        }
    };
    let pc = net.bind(None, None).map_err(DialError::Bind)?;
    dial_with(pc, cfg, &server_name, (node, service), timeout)
}

/// With TLS, Go dialers name the target node; rustls sends a name only if
/// it is a valid DNS name, and an IP literal (which it never sends) stands
/// for the others.
fn target_server_name(node: &str) -> String {
    match crate::tls::sni_for_node(node) {
        rustls::pki_types::ServerName::DnsName(_) => node.to_string(),
        _ => "0.0.0.0".to_string(),
    }
}

/// Dials over any datagram transport in insecure mode; `local_node` is
/// sent as the TLS server name, as Go dialers do.
pub fn dial_over<T: Transport>(
    transport: T,
    local_node: &str,
    to: (&str, &str),
    timeout: Duration,
    idle: Duration,
) -> Result<Stream, DialError> {
    let cfg = tls::client_config(idle, false).map_err(DialError::Tls)?;
    dial_with(transport, cfg, &tls::sni_for(local_node), to, timeout)
}

fn dial_with<T: Transport>(
    transport: T,
    cfg: quinn_proto::ClientConfig,
    server_name: &str,
    to: (&str, &str),
    timeout: Duration,
) -> Result<Stream, DialError> {
    let (connected_tx, connected) = bounded(1);
    let (cmds_tx, cmds) = unbounded();
    let mut core = Endpoint::dialer(connected_tx, cmds_tx);
    let now = Instant::now();
    core.connect(cfg, to, server_name, now + timeout, now)
        .map_err(DialError::Connect)?;
    std::thread::Builder::new()
        .name(format!("dial-{}-{}", to.0, to.1))
        .spawn(move || driver::run(transport, core, cmds, crossbeam_channel::never()))
        .map_err(DialError::Spawn)?;
    // The endpoint answers by the deadline; a closed channel means its
    // thread is gone.
    connected.recv().unwrap_or(Err(DialError::Stopped))
}

#[cfg(test)]
mod tests;
