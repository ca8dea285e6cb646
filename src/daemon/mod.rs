//! Starting a node from its configuration and running it until it stops.
//!
//! How a reload works: `reload` on a control service, or SIGHUP, asks the
//! main thread (which owns the backends) to read the configuration again
//! the way it was first read. If it does not parse, or changes anything
//! but backends and `log-level`, nothing changes and the error is the
//! reply; otherwise the backends whose items changed are stopped and
//! started (see `backends.rs`) and the log level is set.
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
//! unit monitors, unit watchers, the orphan reaper) hold nothing that a
//! stop must finish, so they end with the process.

mod backends;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{self, Config, ConfigError};
use crate::control::reload::{ReloadError, ReloadRequest, Reloader};
use crate::control::{self, ControlService};
use crate::netceptor::Netceptor;
use crate::netceptor::firewall::Firewall;
use crate::tls::Sections;
use crate::work::{Workceptor, signing};
use backends::{Backends, Spec};

/// Reads the configuration again, as it was read at start-up.
pub type Reread = Box<dyn Fn() -> Result<Config, ConfigError>>;

/// Everything that must stay alive while the node runs.
pub struct Daemon {
    net: Netceptor,
    router: JoinHandle<()>,
    signals: Receiver<i32>,
    config: Config,
    reread: Reread,
    backends: Backends,
    reloads: Receiver<ReloadRequest>,
    /// Keeps `reloads` connected when no control service holds a sender.
    _reloader: Reloader,
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
/// not stopped. `reread` reads the configuration again for a reload.
pub fn start(cfg: Config, reread: Reread) -> Result<Daemon, StartError> {
    if let Some(name) = cfg.unsupported.first() {
        return Err(StartError::Unsupported(name.clone()));
    }
    let specs = Spec::all(&cfg);
    if specs.is_empty() && !cfg.local_only {
        return Err(StartError::NothingToDo);
    }
    // First, before any other thread: the reaper keeps SIGCHLD to itself
    // (see `reaper.rs`), and threads started earlier would not. A daemon
    // that cannot reap still runs, as the Go one always does.
    if let Err(e) = crate::reaper::start() {
        warn!("Orphaned processes will not be reaped: {e}");
    }
    let signals = watch_signals()?;
    let tls = Sections::load(&cfg.tls_servers, &cfg.tls_clients, &cfg.node.id)
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let tls = Arc::new(tls);
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
    let mut backends = Backends::new(&net, &tls);
    // Listeners first, so peers (and work resumed below) find them up.
    let listeners: Vec<Spec> = specs.iter().filter(|s| s.is_listener()).cloned().collect();
    backends.apply(&listeners)?;
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
    let (reloader, reloads) = Reloader::new();
    let mut control = Vec::new();
    for c in &cfg.control_services {
        control.push(control::start(c, &net, &work, &tls, &reloader)?);
    }
    crate::services::start(&cfg.proxies, &net, &tls)?;
    backends.apply(&specs)?;
    info!("Initialization complete");
    Ok(Daemon {
        net,
        router,
        signals,
        config: cfg,
        reread,
        backends,
        reloads,
        _reloader: reloader,
        _control: control,
    })
}

impl Daemon {
    /// Runs until SIGINT/SIGTERM or the mesh tells this node to stop,
    /// serving reloads meanwhile. Returns the process exit status.
    pub fn wait(mut self) -> i32 {
        let status = loop {
            crossbeam_channel::select! {
                recv(self.signals) -> sig => match sig {
                    Ok(SIGHUP) => {
                        info!("Received signal {SIGHUP}, reloading the configuration");
                        if let Err(e) = self.reload() {
                            warn!("Reload not successful: {e}");
                        }
                    }
                    sig => {
                        info!("Received signal {}, shutting down", sig.unwrap_or(0));
                        break 0;
                    }
                },
                recv(self.reloads) -> req => {
                    if let Ok(req) = req {
                        let _ = req.reply.send(self.reload());
                    }
                }
                recv(self.net.shutdown_signal()) -> reason => {
                    info!("Shutting down: {}", reason.unwrap_or_default());
                    break 1;
                }
            }
        };
        self.net.shutdown();
        if self.router.join().is_err() {
            warn!("The router thread panicked while stopping");
        }
        status
    }

    /// Reads the configuration again and applies what changed (see the
    /// module documentation).
    fn reload(&mut self) -> Result<(), ReloadError> {
        if self.config.config_files.is_empty() {
            return Err(ReloadError::NoConfigFile);
        }
        let new = (self.reread)().map_err(|e| ReloadError::Failed(e.to_string()))?;
        config::reload::check(&self.config, &new).map_err(ReloadError::NotReloadable)?;
        crate::logging::set_level(new.log_level.level_filter());
        let applied = self.backends.apply(&Spec::all(&new));
        self.config = new;
        let changes = applied.map_err(ReloadError::Failed)?;
        info!(
            "Reloaded the configuration: {} backends started, {} stopped",
            changes.started, changes.stopped
        );
        Ok(())
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on; each arrives on the
/// channel. Called before anything listens, so a signal sent as soon as
/// the node answers still stops (or reloads) it cleanly instead of killing
/// it.
fn watch_signals() -> Result<Receiver<i32>, StartError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| StartError::Failed(format!("cannot watch for signals: {e}")))?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| StartError::Failed(format!("cannot watch for signals: {e}")))?;
    Ok(rx)
}
