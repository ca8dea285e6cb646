//! The node's backends as the configuration lists them, each started under
//! its own [`Scope`], so a reload stops and starts only the ones whose
//! items changed and leaves every other link (and the work running over
//! it) alone. A changed item is a removed one plus an added one: its links
//! are closed and dialled or accepted again with the new settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use log::info;

use crate::backends::scope::Scope;
use crate::backends::tls::BackendTls;
use crate::backends::{tcp, udp, ws};
use crate::config::{
    Config, TcpListenerCfg, TcpPeerCfg, UdpListenerCfg, UdpPeerCfg, WsListenerCfg, WsPeerCfg,
};
use crate::netceptor::Netceptor;
use crate::netceptor::node::{BackendId, BackendParams};
use crate::tls::Sections;

/// One backend item of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    TcpListener(TcpListenerCfg),
    TcpPeer(TcpPeerCfg),
    UdpListener(UdpListenerCfg),
    UdpPeer(UdpPeerCfg),
    WsListener(WsListenerCfg),
    WsPeer(WsPeerCfg),
}

impl Spec {
    /// Every backend item of `cfg`, listeners first, so that a node that
    /// peers with itself finds its listener up.
    pub fn all(cfg: &Config) -> Vec<Spec> {
        let mut specs: Vec<Spec> = Vec::new();
        specs.extend(cfg.tcp_listeners.iter().cloned().map(Spec::TcpListener));
        specs.extend(cfg.udp_listeners.iter().cloned().map(Spec::UdpListener));
        specs.extend(cfg.ws_listeners.iter().cloned().map(Spec::WsListener));
        specs.extend(cfg.tcp_peers.iter().cloned().map(Spec::TcpPeer));
        specs.extend(cfg.udp_peers.iter().cloned().map(Spec::UdpPeer));
        specs.extend(cfg.ws_peers.iter().cloned().map(Spec::WsPeer));
        specs
    }

    pub fn is_listener(&self) -> bool {
        matches!(
            self,
            Spec::TcpListener(_) | Spec::UdpListener(_) | Spec::WsListener(_)
        )
    }

    /// The directive and its address, for log lines.
    fn describe(&self) -> String {
        match self {
            Spec::TcpListener(l) => format!("tcp-listener {}:{}", l.bind_addr, l.port),
            Spec::UdpListener(l) => format!("udp-listener {}:{}", l.bind_addr, l.port),
            Spec::WsListener(l) => format!("ws-listener {}:{}{}", l.bind_addr, l.port, l.path),
            Spec::TcpPeer(p) => format!("tcp-peer {}", p.address),
            Spec::UdpPeer(p) => format!("udp-peer {}", p.address),
            Spec::WsPeer(p) => format!("ws-peer {}", p.address),
        }
    }
}

/// What [`Backends::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub started: usize,
    pub stopped: usize,
}

/// The running backends; owned by the daemon's main thread.
pub struct Backends {
    net: Netceptor,
    tls: Arc<Sections>,
    running: Vec<(Spec, Scope)>,
}

impl Backends {
    pub fn new(net: &Netceptor, tls: &Arc<Sections>) -> Backends {
        Backends {
            net: net.clone(),
            tls: tls.clone(),
            running: Vec::new(),
        }
    }

    /// Stops every running backend that `wanted` no longer lists, then
    /// starts every one it lists that is not running, copy by copy (two
    /// identical items run two backends, as in Go). Starting goes on past
    /// a failure; the error names each backend that did not start.
    pub fn apply(&mut self, wanted: &[Spec]) -> Result<Changes, String> {
        let mut changes = Changes::default();
        // Matched copy by copy: two identical items are two backends.
        let mut missing: Vec<&Spec> = wanted.iter().collect();
        let mut gone = Vec::new();
        for (spec, scope) in std::mem::take(&mut self.running) {
            match missing.iter().position(|w| **w == spec) {
                Some(i) => {
                    missing.remove(i);
                    self.running.push((spec, scope));
                }
                None => gone.push((spec, scope)),
            }
        }
        for (spec, scope) in gone {
            info!("Stopping backend {}", spec.describe());
            scope.stop(&self.net);
            changes.stopped += 1;
        }
        let mut failures = Vec::new();
        for spec in missing {
            let scope = Scope::new();
            match self.start(spec, &scope) {
                Ok(()) => {
                    self.running.push((spec.clone(), scope));
                    changes.started += 1;
                }
                Err(e) => {
                    // Whatever it started (a dial thread) must not run on.
                    scope.stop(&self.net);
                    failures.push(e);
                }
            }
        }
        if failures.is_empty() {
            Ok(changes)
        } else {
            Err(failures.join("; "))
        }
    }

    fn start(&self, spec: &Spec, scope: &Scope) -> Result<(), String> {
        let (net, tls, id) = (&self.net, &self.tls, scope.id());
        match spec {
            Spec::TcpListener(l) => {
                let addr = format!("{}:{}", l.bind_addr, l.port);
                let backend_tls = l.tls.as_deref().map(|n| server_tls(tls, n)).transpose()?;
                let params = params(id, l.cost, &l.node_cost, &l.allowed_peers);
                tcp::listen(net, &addr, params, backend_tls, scope)
            }
            Spec::UdpListener(l) => {
                let addr = format!("{}:{}", l.bind_addr, l.port);
                let params = params(id, l.cost, &l.node_cost, &l.allowed_peers);
                udp::listen(net, &addr, params, scope)
            }
            Spec::WsListener(l) => {
                let addr = format!("{}:{}", l.bind_addr, l.port);
                let ws_tls = l
                    .tls
                    .as_deref()
                    .map(|n| ws_server_tls(tls, n))
                    .transpose()?;
                let params = params(id, l.cost, &l.node_cost, &l.allowed_peers);
                ws::listen(net, &addr, &l.path, params, ws_tls, scope)
            }
            Spec::TcpPeer(p) => {
                let host = tcp::host_of(&p.address);
                let backend_tls = p
                    .tls
                    .as_deref()
                    .map(|n| client_tls(tls, n, host))
                    .transpose()?;
                let params = params(id, p.cost, &BTreeMap::new(), &p.allowed_peers);
                tcp::dial(net, &p.address, p.redial, params, backend_tls, scope)
            }
            Spec::UdpPeer(p) => {
                let params = params(id, p.cost, &BTreeMap::new(), &p.allowed_peers);
                udp::dial(net, &p.address, p.redial, params, scope)
            }
            Spec::WsPeer(p) => {
                let params = params(id, p.cost, &BTreeMap::new(), &p.allowed_peers);
                let target = ws::Dial {
                    url: p.address.clone(),
                    extra_header: p.extra_header.clone(),
                    tls: ws_client_tls(tls, p)?,
                };
                ws::dial(net, target, p.redial, params, scope)
            }
        }
    }
}

fn server_tls(sections: &Sections, name: &str) -> Result<BackendTls, String> {
    let tls = sections.server(name).map_err(|e| e.to_string())?;
    BackendTls::server(&tls).map_err(|e| e.to_string())
}

fn client_tls(sections: &Sections, name: &str, host: &str) -> Result<BackendTls, String> {
    let tls = sections.client(name).map_err(|e| e.to_string())?;
    BackendTls::client(&tls, host).map_err(|e| e.to_string())
}

fn ws_server_tls(sections: &Sections, name: &str) -> Result<BackendTls, String> {
    let tls = sections.server(name).map_err(|e| e.to_string())?;
    let mut config = tls.config().map_err(|e| e.to_string())?;
    // HTTP/1.1 only: an upgrade cannot happen over HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(BackendTls::Server {
        config: Arc::new(config),
        check_names: !tls.skip_names_check,
    })
}

/// A `wss://` peer's TLS client: its `tls` section, else the system roots
/// with host-name checks (Go means to do this and fails at start-up). Only
/// a named section checks the node IDs of the server's certificate: a
/// public certificate behind the system roots names none.
fn ws_client_tls(sections: &Sections, p: &WsPeerCfg) -> Result<Option<BackendTls>, String> {
    let (secure, host, _) = ws::url_parts(&p.address)?;
    if !secure {
        return Ok(None);
    }
    let name = p.tls.as_deref().unwrap_or("default");
    let tls = sections.client(name).map_err(|e| e.to_string())?;
    let (mut config, host) = tls.for_host(&host).map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(BackendTls::Client {
        config: Arc::new(config),
        host,
        check_names: p.tls.is_some() && !tls.skip_names_check,
    }))
}

fn params(
    backend: BackendId,
    cost: f64,
    node_cost: &BTreeMap<String, f64>,
    allowed_peers: &[String],
) -> BackendParams {
    BackendParams {
        cost,
        node_cost: node_cost.clone(),
        allowed_peers: (!allowed_peers.is_empty()).then(|| allowed_peers.to_vec()),
        cert_node_ids: None,
        backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn udp_peer(address: &str) -> Spec {
        Spec::UdpPeer(UdpPeerCfg {
            address: address.into(),
            redial: true,
            cost: 1.0,
            allowed_peers: Vec::new(),
        })
    }

    #[test]
    fn identical_items_are_separate_backends() {
        let (net, router) =
            Netceptor::start("apply-test", Duration::from_secs(30), Default::default());
        let tls = Arc::new(Sections::load(&[], &[], "apply-test").unwrap());
        let mut backends = Backends::new(&net, &tls);
        let (a, b) = (udp_peer("127.0.0.1:9"), udp_peer("127.0.0.1:10"));
        let twice = [a.clone(), a.clone(), b.clone()];
        assert_eq!(
            backends.apply(&twice),
            Ok(Changes {
                started: 3,
                stopped: 0
            })
        );
        assert_eq!(backends.apply(&twice), Ok(Changes::default()));
        let once = [b, a];
        assert_eq!(
            backends.apply(&once),
            Ok(Changes {
                started: 0,
                stopped: 1
            })
        );
        assert_eq!(backends.running.len(), 2);
        assert_eq!(
            backends.apply(&[]),
            Ok(Changes {
                started: 0,
                stopped: 2
            })
        );
        net.shutdown();
        router.join().unwrap();
    }
}
