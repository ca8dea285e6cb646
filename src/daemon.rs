//! Starting a node from its configuration and running it until it stops.

use std::time::Duration;

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::backends::tcp;
use crate::config::{Config, TcpListenerCfg, TcpPeerCfg};
use crate::control::{self, ControlService};
use crate::netceptor::Netceptor;
use crate::netceptor::node::BackendParams;
use crate::work::Workceptor;

/// Everything that must stay alive while the node runs.
pub struct Daemon {
    net: Netceptor,
    _control: Vec<ControlService>,
}

/// Starts every configured part, or fails with one clear message and
/// nothing left running that the caller would have to stop.
pub fn start(cfg: &Config) -> Result<Daemon, String> {
    if let Some(name) = cfg.unsupported.first() {
        return Err(format!("{name}: not supported yet by this receptor"));
    }
    if !cfg.node.firewall_rules.is_empty() {
        return Err("node: firewallrules are not supported yet by this receptor".into());
    }
    if has_tls(cfg) {
        return Err("tls options on backends are not supported yet by this receptor".into());
    }
    let backends = cfg.tcp_listeners.len() + cfg.tcp_peers.len() + usize::from(cfg.local_only);
    if backends == 0 {
        return Err("nothing to do".into());
    }
    let (net, _router) = Netceptor::start(&cfg.node.id, cfg.node.max_idle_connection_timeout);
    for l in &cfg.tcp_listeners {
        let addr = format!("{}:{}", l.bind_addr, l.port);
        tcp::listen(&net, &addr, listener_params(l))?;
    }
    let work = Workceptor::start(
        &net,
        &cfg.node.datadir,
        &cfg.work_commands,
        cfg.log_level.name(),
    );
    let mut control = Vec::new();
    for c in &cfg.control_services {
        control.push(control::start(c, &net, &work)?);
    }
    crate::services::start(&cfg.proxies, &net)?;
    for p in &cfg.tcp_peers {
        tcp::dial(&net, &p.address, p.redial, peer_params(p))?;
    }
    info!("Initialization complete");
    Ok(Daemon {
        net,
        _control: control,
    })
}

fn has_tls(cfg: &Config) -> bool {
    cfg.tcp_listeners.iter().any(|l| l.tls.is_some())
        || cfg.tcp_peers.iter().any(|p| p.tls.is_some())
}

fn listener_params(l: &TcpListenerCfg) -> BackendParams {
    BackendParams {
        cost: l.cost,
        node_cost: l.node_cost.clone(),
        allowed_peers: allowed(&l.allowed_peers),
    }
}

fn peer_params(p: &TcpPeerCfg) -> BackendParams {
    BackendParams {
        cost: p.cost,
        node_cost: Default::default(),
        allowed_peers: allowed(&p.allowed_peers),
    }
}

fn allowed(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

impl Daemon {
    /// Blocks until SIGINT/SIGTERM or the mesh tells this node to stop.
    /// Returns the process exit status.
    pub fn wait(self) -> i32 {
        let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]);
        let (sig_tx, sig_rx) = crossbeam_channel::bounded(1);
        match signals {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        let _ = sig_tx.send(sig);
                    }
                });
            }
            Err(e) => warn!("Cannot watch for signals: {e}"),
        }
        let status = crossbeam_channel::select! {
            recv(sig_rx) -> sig => {
                info!("Received signal {}, shutting down", sig.unwrap_or(0));
                0
            }
            recv(self.net.shutdown_signal()) -> reason => {
                info!("Shutting down: {}", reason.unwrap_or_default());
                1
            }
        };
        self.net.shutdown();
        // Give the router a moment to stop; sockets close with the process.
        std::thread::sleep(Duration::from_millis(20));
        status
    }
}
