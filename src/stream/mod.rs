//! Reliable streams between services on different nodes: QUIC carried in
//! mesh datagrams, as Go nodes do it (docs/wire.md §11).
//!
//! A [`Listener`] serves one named service; [`dial`] opens one stream to a
//! remote service from a fresh ephemeral service. Each runs an endpoint
//! driver thread; callers get blocking [`Stream`] handles.

mod driver;
mod pipe;
pub mod tls;

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};

use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
pub use driver::Transport;
use driver::{Driver, Role};
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
        let driver = Driver::new(
            transport,
            Some(tls::server_config(idle)?),
            Role::Listener {
                accepted: accepted_tx,
            },
        );
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || driver.run(gone_rx))
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
) -> Result<Stream, String> {
    // Fail at once, as ping does, rather than wait out the handshake.
    if !net.has_route(node) {
        return Err("no route to node".into());
    }
    let node = if node.eq_ignore_ascii_case("localhost") {
        net.node_id()
    } else {
        node
    };
    let pc = net.bind(None, None)?;
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
    (node, service): (&str, &str),
    timeout: Duration,
    idle: Duration,
) -> Result<Stream, String> {
    let (connected_tx, connected) = bounded(1);
    let mut driver = Driver::new(
        transport,
        None,
        Role::Dialer {
            connected: Some(connected_tx),
        },
    );
    driver.connect(
        tls::client_config(idle)?,
        node,
        service,
        &tls::sni_for(local_node),
    )?;
    std::thread::Builder::new()
        .name(format!("dial-{node}-{service}"))
        .spawn(move || driver.run(crossbeam_channel::never()))
        .map_err(|e| e.to_string())?;
    match connected.recv_timeout(timeout) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err("timeout: handshake did not complete in time".into()),
        Err(RecvTimeoutError::Disconnected) => Err("stream driver stopped".into()),
    }
}

#[cfg(test)]
mod tests;
