//! Reliable streams between services on different nodes: QUIC carried in
//! mesh datagrams, as Go nodes do it (docs/wire.md §11).
//!
//! A [`Listener`] serves one named service; [`dial`] opens one stream to a
//! remote service from a fresh ephemeral service. Each runs an endpoint
//! driver thread; callers get blocking [`Stream`] handles.

mod conn;
mod driver;
mod endpoint;
mod error;
mod pipe;
pub mod tls;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
pub use driver::Transport;
use endpoint::Endpoint;
pub use error::DialError;
pub use pipe::Stream;

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
        let pc = net.bind(Some(service), advertise)?;
        Self::serve(pc, &format!("stream-{service}"), tls::IDLE_TIMEOUT)
    }

    /// Serves streams over any datagram transport (tests use in-memory ones).
    pub fn serve<T: Transport>(
        transport: T,
        thread_name: &str,
        idle: Duration,
    ) -> Result<Listener, String> {
        let (accepted_tx, accepted) = unbounded();
        let (gone_tx, gone_rx) = bounded(0);
        let (cmds_tx, cmds) = unbounded();
        let core = Endpoint::listener(tls::server_config(idle)?, accepted_tx, cmds_tx);
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
    let pc = net.bind(None, None).map_err(DialError::Bind)?;
    dial_over(
        pc,
        net.node_id(),
        (node, service),
        timeout,
        tls::IDLE_TIMEOUT,
    )
}

/// Dials over any datagram transport; `local_node` is sent as the TLS
/// server name, as Go dialers do.
pub fn dial_over<T: Transport>(
    transport: T,
    local_node: &str,
    to: (&str, &str),
    timeout: Duration,
    idle: Duration,
) -> Result<Stream, DialError> {
    let (connected_tx, connected) = bounded(1);
    let (cmds_tx, cmds) = unbounded();
    let mut core = Endpoint::dialer(connected_tx, cmds_tx);
    let cfg = tls::client_config(idle).map_err(DialError::Tls)?;
    let now = Instant::now();
    core.connect(cfg, to, &tls::sni_for(local_node), now + timeout, now)
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
