//! Starting a node from its configuration and running it until it stops.
//!
//! How the process stops: SIGINT or SIGTERM (or the mesh telling this node
//! that a newer process has its ID) ends [`Daemon::wait`], which stops the
//! router and joins its thread. The router closes every backend link on
//! its way out, so peers see the connections end at once and reroute
//! rather than wait for an idle timeout. Dropping the [`Daemon`] then
//! removes the control sockets. Everything else needs no stop: unit status
//! files are synced on every state change, command units run in sessions
//! of their own and outlive the daemon (the next start follows them), and
//! the remaining threads (accept loops, dialers, control clients, remote
//! unit monitors, unit watchers) hold nothing that a stop must finish, so
//! they end with the process.

use std::fmt;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::backends::tls::BackendTls;
use crate::backends::{tcp, udp, ws};
use crate::config::{Config, TcpListenerCfg, TcpPeerCfg};
use crate::control::{self, ControlService};
use crate::netceptor::Netceptor;
use crate::netceptor::firewall::Firewall;
use crate::netceptor::node::BackendParams;
use crate::tls::Sections;
use crate::work::{Workceptor, signing};

/// Everything that must stay alive while the node runs.
pub struct Daemon {
    net: Netceptor,
    router: JoinHandle<()>,
    signals: Receiver<i32>,
    _control: Vec<ControlService>,
}

/// Why the node did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// No backend is configured: Go prints a hint and exits 1.
    NothingToDo,
    /// The configuration asks for something this build cannot run yet
    /// (a directive, or a directive's option).
    Unsupported(String),
    /// A part could not start; the text names it and says why.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NothingToDo => f.write_str("nothing to do - no backends are running"),
            StartError::Unsupported(what) => {
                write!(f, "{what}: not supported yet by this receptor")
            }
            StartError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StartError {}

impl From<String> for StartError {
    fn from(why: String) -> Self {
        StartError::Failed(why)
    }
}

/// Starts every configured part, or fails with one clear message. On
/// failure the process is expected to exit: threads already started are
/// not stopped.
pub fn start(cfg: &Config) -> Result<Daemon, StartError> {
    if let Some(name) = cfg.unsupported.first() {
        return Err(StartError::Unsupported(name.clone()));
    }
    let backends = cfg.tcp_listeners.len()
        + cfg.tcp_peers.len()
        + cfg.udp_listeners.len()
        + cfg.udp_peers.len()
        + cfg.ws_listeners.len()
        + cfg.ws_peers.len()
        + usize::from(cfg.local_only);
    if backends == 0 {
        return Err(StartError::NothingToDo);
    }
    let signals = watch_signals()?;
    let tls = Sections::load(&cfg.tls_servers, &cfg.tls_clients, &cfg.node.id)
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let tls = std::sync::Arc::new(tls);
    let keys = signing::Keys::load(
        cfg.work_signing
            .as_ref()
            .map(|s| (s.private_key.as_path(), s.token_expiration)),
        cfg.work_verification
            .as_ref()
            .map(|v| v.public_key.as_path()),
    )?;
    let rules = cfg.node.firewall_rules.iter();
    let firewall = Firewall::new(rules.map(|r| (r.action, &r.matches)))
        .map_err(|e| StartError::Failed(format!("node: {e}")))?;
    Workceptor::prepare_datadir(&cfg.node.datadir, &cfg.node.id)?;
    let (net, router) = Netceptor::start_with(
        &cfg.node.id,
        cfg.node.max_idle_connection_timeout,
        firewall,
        cfg.node.limits.clone(),
    );
    for l in &cfg.tcp_listeners {
        let addr = format!("{}:{}", l.bind_addr, l.port);
        let backend_tls = match &l.tls {
            Some(name) => Some(server_tls(&tls, name)?),
            None => None,
        };
        tcp::listen(&net, &addr, listener_params(l), backend_tls)?;
    }
    for l in &cfg.udp_listeners {
        let addr = format!("{}:{}", l.bind_addr, l.port);
        let params = backend_params(l.cost, &l.node_cost, &l.allowed_peers);
        udp::listen(&net, &addr, params)?;
    }
    for l in &cfg.ws_listeners {
        let addr = format!("{}:{}", l.bind_addr, l.port);
        let params = backend_params(l.cost, &l.node_cost, &l.allowed_peers);
        let tls = match &l.tls {
            Some(name) => Some(ws_server_tls(&tls, name)?),
            None => None,
        };
        ws::listen(&net, &addr, &l.path, params, tls)?;
    }
    for k in &cfg.work_kubernetes {
        crate::work::kubernetes::validate(k).map_err(StartError::Failed)?;
    }
    let work = Workceptor::start(
        &net,
        &cfg.node.datadir,
        &cfg.work_commands,
        &cfg.work_kubernetes,
        cfg.log_level.name(),
        tls.clone(),
        keys,
    );
    let mut control = Vec::new();
    for c in &cfg.control_services {
        control.push(control::start(c, &net, &work, &tls)?);
    }
    crate::services::start(&cfg.proxies, &net, &tls)?;
    for p in &cfg.tcp_peers {
        let backend_tls = match &p.tls {
            Some(name) => Some(client_tls(&tls, name, tcp::host_of(&p.address))?),
            None => None,
        };
        tcp::dial(&net, &p.address, p.redial, peer_params(p), backend_tls)?;
    }
    for p in &cfg.udp_peers {
        let params = backend_params(p.cost, &Default::default(), &p.allowed_peers);
        udp::dial(&net, &p.address, p.redial, params)?;
    }
    for p in &cfg.ws_peers {
        let params = backend_params(p.cost, &Default::default(), &p.allowed_peers);
        let target = ws::Dial {
            url: p.address.clone(),
            extra_header: p.extra_header.clone(),
            tls: ws_client_tls(&tls, p)?,
        };
        ws::dial(&net, target, p.redial, params)?;
    }
    info!("Initialization complete");
    Ok(Daemon {
        net,
        router,
        signals,
        _control: control,
    })
}

fn server_tls(sections: &Sections, name: &str) -> Result<BackendTls, StartError> {
    let tls = sections.server(name).map_err(|e| e.to_string())?;
    BackendTls::server(&tls).map_err(|e| StartError::Failed(e.to_string()))
}

fn ws_server_tls(sections: &Sections, name: &str) -> Result<BackendTls, StartError> {
    let tls = sections.server(name).map_err(|e| e.to_string())?;
    let mut config = tls
        .config()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    // HTTP/1.1 only: an upgrade cannot happen over HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(BackendTls::Server {
        config: std::sync::Arc::new(config),
        check_names: !tls.skip_names_check,
    })
}

/// A `wss://` peer's TLS client: its `tls` section, else the system roots
/// with host-name checks (Go means to do this and fails at start-up). Only
/// a named section checks the node IDs of the server's certificate: a
/// public certificate behind the system roots names none.
fn ws_client_tls(
    sections: &Sections,
    p: &crate::config::WsPeerCfg,
) -> Result<Option<BackendTls>, StartError> {
    let (secure, host, _) = ws::url_parts(&p.address).map_err(StartError::Failed)?;
    if !secure {
        return Ok(None);
    }
    let name = p.tls.as_deref().unwrap_or("default");
    let tls = sections.client(name).map_err(|e| e.to_string())?;
    let (mut config, host) = tls
        .for_host(&host)
        .map_err(|e| StartError::Failed(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(BackendTls::Client {
        config: std::sync::Arc::new(config),
        host,
        check_names: p.tls.is_some() && !tls.skip_names_check,
    }))
}

fn client_tls(sections: &Sections, name: &str, host: &str) -> Result<BackendTls, StartError> {
    let tls = sections.client(name).map_err(|e| e.to_string())?;
    BackendTls::client(&tls, host).map_err(|e| StartError::Failed(e.to_string()))
}

fn listener_params(l: &TcpListenerCfg) -> BackendParams {
    backend_params(l.cost, &l.node_cost, &l.allowed_peers)
}

fn peer_params(p: &TcpPeerCfg) -> BackendParams {
    backend_params(p.cost, &Default::default(), &p.allowed_peers)
}

fn backend_params(
    cost: f64,
    node_cost: &std::collections::BTreeMap<String, f64>,
    allowed_peers: &[String],
) -> BackendParams {
    BackendParams {
        cost,
        node_cost: node_cost.clone(),
        allowed_peers: allowed(allowed_peers),
        cert_node_ids: None,
    }
}

fn allowed(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

impl Daemon {
    /// Blocks until SIGINT/SIGTERM or the mesh tells this node to stop.
    /// Returns the process exit status.
    pub fn wait(self) -> i32 {
        let status = crossbeam_channel::select! {
            recv(self.signals) -> sig => {
                info!("Received signal {}, shutting down", sig.unwrap_or(0));
                0
            }
            recv(self.net.shutdown_signal()) -> reason => {
                info!("Shutting down: {}", reason.unwrap_or_default());
                1
            }
        };
        self.net.shutdown();
        if self.router.join().is_err() {
            warn!("The router thread panicked while stopping");
        }
        status
    }
}

/// Catches SIGINT and SIGTERM from now on; each arrives on the channel.
/// Called before anything listens, so a signal sent as soon as the node
/// answers still stops it cleanly instead of killing it.
fn watch_signals() -> Result<Receiver<i32>, StartError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| StartError::Failed(format!("cannot watch for signals: {e}")))?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(sig);
            }
        })
        .map_err(|e| StartError::Failed(format!("cannot watch for signals: {e}")))?;
    Ok(rx)
}
