//! Data messages: delivery to local services, forwarding towards other
//! nodes, the reserved `ping` and `unreach` services, and unreachables.

use bytes::{Buf, Bytes, BytesMut};
use log::{debug, error};

use super::interner::Id;
use super::limits::Refusal;
use super::{
    MAX_FORWARDING_HOPS, Node, Output, PROBLEM_BLOCKED, PROBLEM_EXPIRED, PROBLEM_SERVICE_UNKNOWN,
    RESERVED_PING, RESERVED_UNREACH, SendError,
};
use crate::netceptor::addr;
use crate::netceptor::codec::{self, DATA_HEADER_LEN, DataHeader, ServiceName, UnreachableMessage};
use crate::netceptor::firewall::{Action, Packet};

impl Node {
    /// Inbound frames stay in IDs: names are looked up only for a
    /// firewall to ask, a local delivery and the unreachable paths.
    pub(super) fn handle_inbound_data(&mut self, h: DataHeader, frame: Vec<u8>) {
        let (Some(&from), Some(&to)) = (self.names.get(&h.from_node), self.names.get(&h.to_node))
        else {
            let what = || "Error translating data to message struct: hash not found".to_string();
            return self.log_limited(Refusal::UnknownHash, log::Level::Error, what);
        };
        if !self.firewall.is_empty() {
            let (from, to) = self.names_of(from, to);
            if !self.passes_firewall(h, &from, &to) {
                return;
            }
        }
        if to != self.graph.own() {
            if h.hops_to_live == 0 {
                let (from, to) = self.names_of(from, to);
                return self.expire(h, &from, &to);
            }
            return self.forward(h, to, frame);
        }
        // Owning the frame's buffer, skip the header without copying.
        let mut payload = BytesMut::from(Bytes::from(frame));
        payload.advance(DATA_HEADER_LEN);
        if let Err(e) = self.deliver_local(h, from, payload) {
            error!("Error handling message data: {e}");
        }
    }

    /// Both names, for the paths that report or ask about a message.
    fn names_of(&self, from: Id, to: Id) -> (String, String) {
        let name = |id| self.graph.name(id).to_string();
        (name(from), name(to))
    }

    /// Sends a datagram from a local service (or relays one from a peer).
    pub fn send(
        &mut self,
        from_service: ServiceName,
        to_node: &str,
        to_service: &str,
        payload: &[u8],
        hops: u8,
    ) -> Result<(), SendError> {
        let to_service = ServiceName::new(to_service).map_err(|_| SendError::ServiceNameTooLong)?;
        let own = self.graph.own();
        let to = if addr::is_local_alias(to_node) {
            Some(own)
        } else {
            self.graph.id(to_node)
        };
        // Only names of nodes we can reach are kept: a local client must
        // not grow the table with names it makes up.
        let reached = to.filter(|&id| id == own || self.routes.contains(id));
        let h = DataHeader {
            hops_to_live: hops,
            from_node: self.own_hash,
            to_node: match reached {
                Some(id) => self.add_name(id),
                None => crate::netceptor::hash::node_hash(to_node),
            },
            from_service,
            to_service,
        };
        // Named only for the firewall and the unreachable paths.
        let names = |node: &Node| {
            let to_name = to.map_or(to_node, |id| node.graph.name(id));
            (node.id.clone(), to_name.to_string())
        };
        if !self.firewall.is_empty() {
            let (me, to_name) = names(self);
            if !self.passes_firewall(h, &me, &to_name) {
                return Ok(());
            }
        }
        if to == Some(own) {
            return self.deliver_local(h, own, BytesMut::from(payload));
        }
        match reached {
            _ if hops == 0 => {
                let (me, to_name) = names(self);
                self.expire(h, &me, &to_name);
            }
            Some(to) => self.forward(h, to, h.encode(payload)),
            None => return Err(SendError::NoRoute),
        }
        Ok(())
    }

    /// Asks the firewall about a data message from `from` to `to`; true if
    /// it may go on. A rejected message is answered with an unreachable
    /// (unless it is one itself, so two firewalls cannot ping-pong).
    fn passes_firewall(&mut self, h: DataHeader, from: &str, to: &str) -> bool {
        let (from_service, to_service) = (h.from_service.to_text(), h.to_service.to_text());
        let packet = Packet {
            from_node: from,
            from_service: &from_service,
            to_node: to,
            to_service: &to_service,
        };
        match self.firewall.decide(&packet) {
            Action::Accept => true,
            Action::Drop => {
                debug!(
                    "Firewall dropped a message from {from}:{from_service} to {to}:{to_service}"
                );
                false
            }
            Action::Reject => {
                debug!(
                    "Firewall rejected a message from {from}:{from_service} to {to}:{to_service}"
                );
                if h.from_service.as_bytes() != RESERVED_UNREACH {
                    self.send_unreachable(from, to, h, PROBLEM_BLOCKED);
                }
                false
            }
        }
    }

    /// A message out of hops: the sender hears why, unless it is an
    /// unreachable itself.
    fn expire(&mut self, h: DataHeader, from: &str, to: &str) {
        if h.from_service.as_bytes() != RESERVED_UNREACH {
            self.send_unreachable(from, to, h, PROBLEM_EXPIRED);
        }
    }

    /// Relays a frame with hops left towards node `to`.
    fn forward(&mut self, h: DataHeader, to: Id, mut frame: Vec<u8>) {
        let hop = self.routes.get(to).map(|&hop| self.graph.name(hop));
        let Some(&conn) = hop.and_then(|hop| self.peers.get(hop)) else {
            let to = self.graph.name(to).to_string();
            let what = || format!("Error handling message data: no route to node {to}");
            return self.log_limited(Refusal::NoRoute, log::Level::Error, what);
        };
        codec::set_hops_to_live(&mut frame, h.hops_to_live - 1);
        // Taking over the frame's buffer: no copy.
        self.outputs.push_back(Output::Send {
            conn,
            msg: frame.into(),
        });
    }

    fn deliver_local(
        &mut self,
        h: DataHeader,
        from: Id,
        payload: BytesMut,
    ) -> Result<(), SendError> {
        let from_name = || self.graph.name(from).to_string();
        match h.to_service.as_bytes() {
            // Never answer a reserved service: a forged ping from `ping`
            // would otherwise echo forever (or recurse without end when it
            // claims to come from ourselves).
            RESERVED_PING
                if ![RESERVED_PING, RESERVED_UNREACH].contains(&h.from_service.as_bytes()) =>
            {
                let (ping, from) = (ServiceName::new("ping").unwrap_or_default(), from_name());
                let reply_to = h.from_service.to_text();
                return self.send(ping, &from, &reply_to, &[], MAX_FORWARDING_HOPS);
            }
            RESERVED_PING => return Ok(()),
            RESERVED_UNREACH => {
                let from = from_name();
                self.handle_unreachable(h, &from, &payload);
                return Ok(());
            }
            _ => {}
        }
        if self.services.contains_key(&h.to_service) {
            self.outputs.push_back(Output::Deliver {
                service: h.to_service,
                from_node: from_name(),
                from_service: h.from_service,
                payload,
            });
            return Ok(());
        }
        if from == self.graph.own() {
            return Err(SendError::ServiceUnknown);
        }
        let (from, to) = (from_name(), self.id.clone());
        self.send_unreachable(&from, &to, h, PROBLEM_SERVICE_UNKNOWN);
        Ok(())
    }

    fn handle_unreachable(&mut self, h: DataHeader, from: &str, payload: &[u8]) {
        let message: UnreachableMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                let what = || format!("Error handling message data: bad unreachable message: {e}");
                return self.log_limited(Refusal::Unreachable, log::Level::Error, what);
            }
        };
        let me = self.id.clone();
        let what = || {
            format!(
                "Received unreachable message from {from} (service {}) to {me} (service {}): ttl {}, data {}",
                h.from_service, h.to_service, h.hops_to_live, message.problem
            )
        };
        self.log_limited(Refusal::Unreachable, log::Level::Warn, what);
        if message.from_node != self.id {
            return;
        }
        let Ok(service) = ServiceName::new(&message.from_service) else {
            return;
        };
        if self.services.contains_key(&service) {
            self.outputs.push_back(Output::Unreachable {
                service,
                message: Box::new(message),
                received_from: from.to_string(),
            });
        }
    }

    fn send_unreachable(&mut self, from: &str, to: &str, h: DataHeader, problem: &str) {
        let message = UnreachableMessage {
            from_node: from.to_string(),
            to_node: to.to_string(),
            from_service: h.from_service.to_text(),
            to_service: h.to_service.to_text(),
            problem: problem.to_string(),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let unreach = ServiceName::new("unreach").unwrap_or_default();
        if let Err(e) = self.send(unreach, from, "unreach", &payload, MAX_FORWARDING_HOPS) {
            debug!("Could not send unreachable message to {from}: {e}");
        }
    }
}
