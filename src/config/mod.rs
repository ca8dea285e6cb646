//! Configuration: the legacy ("v1") command-line directives and YAML
//! directive lists, and the v2 file (`--config-v2`, a map of sections),
//! both checked against the table of every Receptor directive and turned
//! into a typed [`Config`].
//!
//! The only I/O is reading the config files, `$HOME` (where the v2 file is
//! looked for by default) and the host name (the default node ID).

mod build;
mod cli;
mod directive;
mod help;
pub mod reload;
mod schema;
mod v2;
mod value;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use build::REMOTE_WORK_TYPE;
pub use help::{bash_completion, help_text, v2_help_text, zsh_completion};
pub use value::parse_go_duration as parse_duration;

/// What the command line asks the program to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Run a node with this configuration.
    Run(Box<Config>),
    /// Print this text to stdout and exit 0 (`--help`, no arguments,
    /// `--bash-completion`).
    Help(String),
    /// Print the version and exit 0.
    Version,
}

/// A configuration error; `Display` gives the message alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(msg: String) -> Self {
        ConfigError(msg)
    }
}

/// The node's whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: NodeCfg,
    /// `Info` when `log-level` is absent; `Error` when given without a value.
    pub log_level: LogLevel,
    pub trace: bool,
    pub local_only: bool,
    pub tcp_listeners: Vec<TcpListenerCfg>,
    pub tcp_peers: Vec<TcpPeerCfg>,
    pub udp_listeners: Vec<UdpListenerCfg>,
    pub udp_peers: Vec<UdpPeerCfg>,
    pub ws_listeners: Vec<WsListenerCfg>,
    pub ws_peers: Vec<WsPeerCfg>,
    pub control_services: Vec<ControlServiceCfg>,
    /// Service proxies between local sockets and mesh services.
    pub proxies: Vec<ProxyCfg>,
    pub work_commands: Vec<WorkCommandCfg>,
    /// `work-signing`: sign the requests of remote units with `signwork`.
    pub work_signing: Option<WorkSigningCfg>,
    /// `work-verification`: check signed requests for `verifysignature` types.
    pub work_verification: Option<WorkVerificationCfg>,
    pub work_kubernetes: Vec<WorkKubernetesCfg>,
    /// Set when this process is a unit's command runner, not a node.
    pub command_runner: Option<CommandRunnerCfg>,
    /// Set when this process is the daemon's runner fork server
    /// (`work::forkserver`), not a node.
    pub command_runner_server: bool,
    /// Set when this process runs a certificate tool, not a node.
    pub cert_tool: Option<CertToolCfg>,
    /// Named TLS settings that listeners and services refer to.
    pub tls_servers: Vec<TlsServerCfg>,
    pub tls_clients: Vec<TlsClientCfg>,
    /// Directives that parsed and validated but are not implemented yet, one
    /// entry per occurrence in order of appearance, by canonical lower-case
    /// name (e.g. "ws-listener", "work-command", "tls-server").
    pub unsupported: Vec<String>,
    /// The config files given with -c/--config, in order, or the one v2
    /// file.
    pub config_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

impl LogLevel {
    pub fn name(&self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }

    pub fn level_filter(&self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        level.level_filter()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCfg {
    /// Given, or the host name.
    pub id: String,
    /// Default `/tmp/receptor`.
    pub datadir: PathBuf,
    /// Default and minimum 21 s.
    pub max_idle_connection_timeout: Duration,
    pub firewall_rules: Vec<FirewallRuleCfg>,
    /// Bounds on mesh state (`maxnodes`, `maxconnections`,
    /// `maxadvertisements`).
    pub limits: crate::netceptor::node::Limits,
}

pub use crate::netceptor::firewall::{Action as FirewallAction, RuleSpec};

/// One firewall rule. Each matcher is an exact name or, written as `/re/`, a
/// regular expression to be anchored `^re$` (kept with its slashes here;
/// the rules are compiled once while the config is checked, to report bad
/// ones, and again by the node that runs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRuleCfg {
    pub action: FirewallAction,
    pub matches: RuleSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpListenerCfg {
    pub bind_addr: String,
    pub port: u16,
    pub tls: Option<String>,
    pub cost: f64,
    pub node_cost: BTreeMap<String, f64>,
    pub allowed_peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpPeerCfg {
    /// `host:port`.
    pub address: String,
    pub redial: bool,
    pub tls: Option<String>,
    pub cost: f64,
    pub allowed_peers: Vec<String>,
}

/// `udp-listener`: as a TCP listener, without TLS (UDP has none).
#[derive(Debug, Clone, PartialEq)]
pub struct UdpListenerCfg {
    pub bind_addr: String,
    pub port: u16,
    pub cost: f64,
    pub node_cost: BTreeMap<String, f64>,
    pub allowed_peers: Vec<String>,
}

/// `udp-peer`: as a TCP peer, without TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpPeerCfg {
    /// `host:port`.
    pub address: String,
    pub redial: bool,
    pub cost: f64,
    pub allowed_peers: Vec<String>,
}

/// `ws-listener`: an HTTP server that upgrades requests for `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct WsListenerCfg {
    pub bind_addr: String,
    pub port: u16,
    pub path: String,
    pub tls: Option<String>,
    pub cost: f64,
    pub node_cost: BTreeMap<String, f64>,
    pub allowed_peers: Vec<String>,
}

/// `ws-peer`: a `ws://` or `wss://` URL to dial.
#[derive(Debug, Clone, PartialEq)]
pub struct WsPeerCfg {
    pub address: String,
    pub redial: bool,
    /// `Name:value`, split at the first `:` when sent.
    pub extra_header: Option<String>,
    pub tls: Option<String>,
    pub cost: f64,
    pub allowed_peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlServiceCfg {
    /// Mesh service name; empty disables the mesh listener.
    pub service: String,
    pub filename: Option<PathBuf>,
    pub permissions: u32,
    pub tls: Option<String>,
    pub tcp_listen: Option<String>,
    pub tcp_tls: Option<String>,
    /// Clients served at once on the Unix and TCP listeners (default 256).
    pub max_clients: usize,
}

/// A `work-command` work type.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkCommandCfg {
    pub work_type: String,
    pub command: String,
    pub params: String,
    pub allow_runtime_params: bool,
    pub verify_signature: bool,
}

/// `work-signing` (docs/work.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSigningCfg {
    pub private_key: PathBuf,
    /// `None`: the default lifetime (Go crashes instead).
    pub token_expiration: Option<Duration>,
}

/// `work-verification` (docs/work.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkVerificationCfg {
    pub public_key: PathBuf,
}

/// A `work-kubernetes` work type (docs/kubernetes.md §1), as configured;
/// checked by `work::kubernetes::validate` at startup.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkKubernetesCfg {
    pub work_type: String,
    pub namespace: String,
    pub image: String,
    pub command: String,
    pub params: String,
    pub auth_method: String,
    pub kube_config: String,
    pub pod: String,
    pub allow_runtime_auth: bool,
    pub allow_runtime_command: bool,
    pub allow_runtime_params: bool,
    pub allow_runtime_pod: bool,
    pub delete_pod_on_restart: bool,
    pub stream_method: String,
    pub verify_signature: bool,
}

/// The hidden `command-runner` directive: run one unit's command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRunnerCfg {
    pub command: String,
    pub params: String,
    pub unit_dir: PathBuf,
}

/// `tls-server`: the identity a TLS server shows and how it checks clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerCfg {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub require_client_cert: bool,
    pub client_cas: Option<PathBuf>,
    /// Hex SHA-256/SHA-512 fingerprints, colons allowed.
    pub pinned_client_cert: Vec<String>,
    pub skip_receptor_names_check: bool,
    pub min_tls13: bool,
}

/// `tls-client`: the identity a TLS client shows and how it checks servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientCfg {
    pub name: String,
    /// Go allows neither or both of cert and key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub root_cas: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub pinned_server_cert: Vec<String>,
    pub skip_receptor_names_check: bool,
    pub min_tls13: bool,
}

/// An exclusive certificate tool (spec §5); runs instead of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertToolCfg {
    Init(CertInitCfg),
    MakeReq(CertMakeReqCfg),
    SignReq(CertSignReqCfg),
}

/// `cert-init`: make a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInitCfg {
    pub common_name: String,
    /// 0 means 2048.
    pub bits: i64,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub out_cert: PathBuf,
    pub out_key: PathBuf,
}

/// `cert-makereq`: make a certificate request, with a new key or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMakeReqCfg {
    pub common_name: String,
    pub bits: i64,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub node_ids: Vec<String>,
    pub out_req: PathBuf,
    pub in_key: Option<PathBuf>,
    pub out_key: Option<PathBuf>,
}

/// `cert-signreq`: sign a request with a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSignReqCfg {
    pub req: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub out_cert: PathBuf,
    /// Sign without asking.
    pub verify: bool,
}

/// A service proxy: `*-server` listens locally and dials a mesh service;
/// `*-client` serves a mesh service and dials a local address.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyCfg {
    TcpServer {
        bind_addr: String,
        port: u16,
        remote_node: String,
        remote_service: String,
        tls_server: Option<String>,
        tls_client: Option<String>,
    },
    TcpClient {
        service: String,
        address: String,
        tls_server: Option<String>,
        tls_client: Option<String>,
    },
    UdpServer {
        bind_addr: String,
        port: u16,
        remote_node: String,
        remote_service: String,
    },
    UdpClient {
        service: String,
        address: String,
    },
    UnixSocketServer {
        filename: PathBuf,
        permissions: u32,
        remote_node: String,
        remote_service: String,
        tls: Option<String>,
    },
    UnixSocketClient {
        service: String,
        filename: PathBuf,
        tls: Option<String>,
    },
}

/// Parses the command line (without argv\[0\]), loading any config files:
/// the legacy form, or the v2 one when argv holds `--config-v2`.
pub fn parse_args(args: &[String]) -> Result<Invocation, ConfigError> {
    parse_with_hostname(args, build::system_hostname)
}

fn parse_with_hostname(
    args: &[String],
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Invocation, ConfigError> {
    if cli::is_v2(args) {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        return parse_v2(args, home, hostname);
    }
    match cli::special(args) {
        _ if args.is_empty() => return Ok(Invocation::Help(help_text())),
        Some(cli::Special::Help) => return Ok(Invocation::Help(help_text())),
        Some(cli::Special::BashCompletion) => return Ok(Invocation::Help(bash_completion())),
        Some(cli::Special::Completion(shell)) => {
            return match shell.as_deref() {
                Some("bash") => Ok(Invocation::Help(bash_completion())),
                Some("zsh") => Ok(Invocation::Help(zsh_completion())),
                _ => Err("--completion needs a shell: bash or zsh".to_string().into()),
            };
        }
        None => {}
    }
    let mut raw = Vec::new();
    let mut config_files = Vec::new();
    for step in cli::parse(args)? {
        match step {
            cli::Step::Directive(d) => raw.push(d),
            cli::Step::ConfigFile(path) => {
                raw.extend(yaml::load(&path)?);
                config_files.push(path);
            }
        }
    }
    finish(&raw, config_files, hostname)
}

/// `--config-v2 [--config FILE] [--version] [--help]`; `home` holds the
/// default file.
fn parse_v2(
    args: &[String],
    home: Option<PathBuf>,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let flags = cli::parse_v2(args)?;
    if flags.help {
        return Ok(Invocation::Help(v2_help_text()));
    }
    if flags.version {
        return Ok(Invocation::Version);
    }
    let path = match flags.config {
        Some(path) => path,
        None => default_v2_file(home)?,
    };
    let raw = v2::load(&path)?;
    finish(&raw, vec![path], hostname)
}

/// `$HOME/receptor.yaml`, if it exists (Go's message otherwise).
fn default_v2_file(home: Option<PathBuf>) -> Result<PathBuf, String> {
    home.map(|h| h.join("receptor.yaml"))
        .filter(|path| path.is_file())
        .ok_or_else(|| "Could not locate config file (default is $HOME/receptor.yaml)".to_string())
}

/// Checks raw directives from either front-end and builds the config.
fn finish(
    raw: &[directive::RawDirective],
    config_files: Vec<PathBuf>,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let directives = raw
        .iter()
        .map(directive::resolve)
        .collect::<Result<Vec<_>, _>>()?;
    build::check_counts(&directives)?;
    if directives.iter().any(|d| d.name() == "version") {
        return Ok(Invocation::Version);
    }
    let strict_node = !directives.iter().any(|d| d.spec.exclusive);
    let config = build::build(&directives, config_files, strict_node, hostname)?;
    Ok(Invocation::Run(Box::new(config)))
}

#[cfg(test)]
mod tests;
