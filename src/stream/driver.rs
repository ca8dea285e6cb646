//! The endpoint thread: a thin shell that feeds the sans-IO [`Endpoint`]
//! with mesh datagrams, handle commands and the clock, and sends what it
//! emits. It blocks only until the endpoint's next deadline.

use std::time::Instant;

use crossbeam_channel::{Receiver, at, never, select};

use super::endpoint::Endpoint;
use super::pipe::DriverCmd;
use crate::netceptor::Delivery;

/// Datagrams handled before the driver looks at its other work.
const RECV_BATCH: usize = 64;

/// Where a driver's datagrams come from and go to.
pub trait Transport: Send + 'static {
    fn incoming(&self) -> &Receiver<Delivery>;
    fn send(&self, to_node: &str, to_service: &str, payload: Vec<u8>);
}

impl Transport for crate::netceptor::PacketConn {
    fn incoming(&self) -> &Receiver<Delivery> {
        self.receiver()
    }

    fn send(&self, to_node: &str, to_service: &str, payload: Vec<u8>) {
        crate::netceptor::PacketConn::send(self, to_node, to_service, payload);
    }
}

/// Runs `core` until it has nothing left to serve. `cmds` carries what
/// its stream handles send; `listener_gone` fires when the owner of a
/// listener drops it.
pub(crate) fn run<T: Transport>(
    transport: T,
    mut core: Endpoint,
    cmds: Receiver<DriverCmd>,
    listener_gone: Receiver<()>,
) {
    let mut gone = listener_gone;
    loop {
        let now = Instant::now();
        core.handle_timeout(now);
        while let Some(t) = core.poll_transmit(now) {
            transport.send(&t.to_node, &t.to_service, t.payload);
        }
        if core.is_finished() {
            return;
        }
        let deadline = core.poll_timeout().map_or_else(never, at);
        select! {
            recv(transport.incoming()) -> d => match d {
                Ok(d) => feed(&mut core, d),
                Err(_) => return core.handle_transport_closed(),
            },
            recv(cmds) -> c => {
                if let Ok(c) = c {
                    core.handle_cmd(c);
                }
            }
            recv(gone) -> _ => {
                core.stop_accepting(Instant::now());
                gone = never();
            }
            recv(deadline) -> _ => {}
        }
        for d in transport.incoming().try_iter().take(RECV_BATCH) {
            feed(&mut core, d);
        }
        for c in cmds.try_iter() {
            core.handle_cmd(c);
        }
    }
}

fn feed(core: &mut Endpoint, d: Delivery) {
    let now = Instant::now();
    match d {
        Delivery::Data {
            from_node,
            from_service,
            payload,
        } => core.handle_datagram(&from_node, &from_service.to_text(), payload, now),
        Delivery::Unreachable { message, .. } => {
            core.handle_unreachable(&message.to_node, &message.to_service, &message.problem, now)
        }
    }
}
