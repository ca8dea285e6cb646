//! From checked directives to the typed [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::directive::{Directive, RawDirective, resolve};
use super::schema;
use super::{
    CertInitCfg, CertMakeReqCfg, CertSignReqCfg, CertToolCfg, CommandRunnerCfg, Config,
    ControlServiceCfg, FirewallAction, FirewallRuleCfg, LogLevel, NodeCfg, ProxyCfg, RuleSpec,
    TcpListenerCfg, TcpPeerCfg, TlsClientCfg, TlsServerCfg, UdpListenerCfg, UdpPeerCfg,
    WorkCommandCfg, WorkKubernetesCfg, WorkSigningCfg, WorkVerificationCfg, WsListenerCfg,
    WsPeerCfg,
};
use crate::netceptor::addr::is_local_alias;
use crate::netceptor::firewall::Firewall;

/// The smallest allowed `maxidleconnectiontimeout`, also the default.
pub(crate) const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(21);

/// Enforces singleton and exclusive directives.
pub(crate) fn check_counts(directives: &[Directive]) -> Result<(), String> {
    for (i, d) in directives.iter().enumerate() {
        let again = directives[i + 1..].iter().find(|o| o.name() == d.name());
        if let (true, Some(dup)) = (d.spec.singleton, again) {
            return Err(dup.error(format!("only one {} directive allowed", d.name())));
        }
    }
    match directives.iter().find(|d| d.spec.exclusive) {
        Some(ex) if directives.len() > 1 => Err(format!(
            "cannot specify any other options with {}",
            ex.name()
        )),
        _ => Ok(()),
    }
}

/// Builds the config. `strict_node` enables the node ID checks (off when an
/// exclusive tool runs instead of a node); `hostname` supplies the default ID.
pub(crate) fn build(
    directives: &[Directive],
    config_files: Vec<PathBuf>,
    strict_node: bool,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Config, String> {
    let implicit_node;
    let node_directive = match directives.iter().find(|d| d.name() == "node") {
        Some(d) => d,
        None => {
            implicit_node = implicit("node")?;
            &implicit_node
        }
    };
    let mut config = Config {
        node: node(node_directive, strict_node, hostname)?,
        log_level: LogLevel::Info,
        trace: false,
        local_only: false,
        tcp_listeners: Vec::new(),
        tcp_peers: Vec::new(),
        udp_listeners: Vec::new(),
        udp_peers: Vec::new(),
        ws_listeners: Vec::new(),
        ws_peers: Vec::new(),
        control_services: Vec::new(),
        proxies: Vec::new(),
        work_commands: Vec::new(),
        work_signing: None,
        work_verification: None,
        work_kubernetes: Vec::new(),
        command_runner: None,
        command_runner_server: false,
        cert_tool: None,
        tls_servers: Vec::new(),
        tls_clients: Vec::new(),
        unsupported: Vec::new(),
        config_files,
    };
    for d in directives {
        check_common(d)?;
        add(&mut config, d)?;
    }
    check_verification(&config)?;
    check_work_types(&config)?;
    Ok(config)
}

fn implicit(name: &str) -> Result<Directive, String> {
    let spec = schema::directive(name).ok_or_else(|| format!("unknown directive {name:?}"))?;
    resolve(&RawDirective::new(spec, String::new()))
}

fn add(config: &mut Config, d: &Directive) -> Result<(), String> {
    match d.name() {
        "node" => {}
        "log-level" => config.log_level = log_level(d)?,
        "trace" => config.trace = true,
        "local-only" => config.local_only = true,
        "tcp-listener" => config.tcp_listeners.push(tcp_listener(d)?),
        "tcp-peer" => config.tcp_peers.push(tcp_peer(d)?),
        "udp-listener" => config.udp_listeners.push(udp_listener(d)?),
        "udp-peer" => config.udp_peers.push(udp_peer(d)?),
        "ws-listener" => config.ws_listeners.push(ws_listener(d)?),
        "ws-peer" => config.ws_peers.push(ws_peer(d)?),
        "control-service" => config.control_services.push(control_service(d)?),
        "tcp-server" | "tcp-client" | "udp-server" | "udp-client" | "unix-socket-server"
        | "unix-socket-client" => config.proxies.push(proxy(d)?),
        "work-command" => config.work_commands.push(WorkCommandCfg {
            work_type: d.str("worktype"),
            command: d.str("command"),
            params: d.str("params"),
            allow_runtime_params: d.bool("allowruntimeparams"),
            verify_signature: d.bool("verifysignature"),
        }),
        "work-signing" => {
            config.work_signing = Some(WorkSigningCfg {
                private_key: PathBuf::from(d.str("privatekey")),
                token_expiration: d.duration("tokenexpiration"),
            })
        }
        "work-verification" => {
            config.work_verification = Some(WorkVerificationCfg {
                public_key: PathBuf::from(d.str("publickey")),
            })
        }
        "work-kubernetes" => config.work_kubernetes.push(WorkKubernetesCfg {
            work_type: d.str("worktype"),
            namespace: d.str("namespace"),
            image: d.str("image"),
            command: d.str("command"),
            params: d.str("params"),
            auth_method: d.str("authmethod"),
            kube_config: d.str("kubeconfig"),
            pod: d.str("pod"),
            allow_runtime_auth: d.bool("allowruntimeauth"),
            allow_runtime_command: d.bool("allowruntimecommand"),
            allow_runtime_params: d.bool("allowruntimeparams"),
            allow_runtime_pod: d.bool("allowruntimepod"),
            delete_pod_on_restart: d.bool("deletepodonrestart"),
            stream_method: d.str("streammethod"),
            verify_signature: d.bool("verifysignature"),
        }),
        "command-runner" => {
            config.command_runner = Some(CommandRunnerCfg {
                command: d.str("command"),
                params: d.str("params"),
                unit_dir: PathBuf::from(d.str("unitdir")),
            })
        }
        "command-runner-server" => config.command_runner_server = true,
        "cert-init" | "cert-makereq" | "cert-signreq" => config.cert_tool = Some(cert_tool(d)),
        "tls-server" => config.tls_servers.push(tls_server(d)),
        "tls-client" => config.tls_clients.push(tls_client(d)),
        other => config.unsupported.push(other.to_string()),
    }
    Ok(())
}

/// A type that verifies signatures needs the key to verify them with
/// (Go's text).
fn check_verification(config: &Config) -> Result<(), String> {
    match config.work_commands.iter().find(|t| t.verify_signature) {
        Some(t) if config.work_verification.is_none() => Err(format!(
            "VerifySignature for work command '{}' is true, but the work verification public key is not specified",
            t.work_type
        )),
        _ => Ok(()),
    }
}

/// The work type of units submitted to run on another node: the
/// workceptor's own, never a configured one (docs/work.md §6).
pub const REMOTE_WORK_TYPE: &str = "remote";

/// A configured type may not take the remote units' name: its runner's
/// status writes would meet the remote units' write-through status, and
/// Go refuses it too (Go's text).
fn check_work_types(config: &Config) -> Result<(), String> {
    let mut names = config
        .work_commands
        .iter()
        .map(|t| &t.work_type)
        .chain(config.work_kubernetes.iter().map(|k| &k.work_type));
    match names.any(|name| name == REMOTE_WORK_TYPE) {
        true => Err(format!("work type {REMOTE_WORK_TYPE} already registered")),
        false => Ok(()),
    }
}

/// Checks shared by every directive: costs, ports and permissions.
fn check_common(d: &Directive) -> Result<(), String> {
    if d.spec.field("cost").is_some() && !positive(d.float("cost")) {
        return Err(d.error("cost must be greater than 0"));
    }
    if let Some((node, _)) = d.float_map("nodecost").iter().find(|(_, c)| !positive(**c)) {
        return Err(d.error(format!("nodecost for {node:?} must be greater than 0")));
    }
    if d.is_set("port") {
        port(d)?;
    }
    if d.is_set("permissions") {
        permissions(d)?;
    }
    Ok(())
}

fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn port(d: &Directive) -> Result<u16, String> {
    let value = d.int("port");
    u16::try_from(value)
        .map_err(|_| d.error(format!("parameter port: {value} is out of range (0-65535)")))
}

fn permissions(d: &Directive) -> Result<u32, String> {
    let value = d.int("permissions");
    u32::try_from(value)
        .ok()
        .filter(|p| *p <= 0o7777)
        .ok_or_else(|| {
            d.error(format!(
                "parameter permissions: {value:#o} is not a file mode"
            ))
        })
}

fn log_level(d: &Directive) -> Result<LogLevel, String> {
    let text = d.str("level");
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LogLevel::Error),
        "warning" => Ok(LogLevel::Warning),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        _ => Err(d.error(format!(
            "{text:?} is not a valid log level (expected error, warning, info or debug)"
        ))),
    }
}

fn node(
    d: &Directive,
    strict: bool,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<NodeCfg, String> {
    let id = node_id(d.str("id"), strict, hostname).map_err(|e| d.error(e))?;
    if strict && let Err(e) = crate::netceptor::names::check_node_id(&id) {
        let shown = crate::netceptor::names::shown(&id);
        return Err(d.error(format!("node ID {shown} {e}")));
    }
    let datadir = d.str("datadir");
    if datadir.is_empty() {
        return Err(d.error("datadir must not be empty"));
    }
    let timeout = d.duration("maxidleconnectiontimeout");
    let timeout = timeout.unwrap_or(MIN_IDLE_TIMEOUT);
    if timeout < MIN_IDLE_TIMEOUT {
        return Err(d.error(format!(
            "maxidleconnectiontimeout {timeout:?} is less than the minimum {MIN_IDLE_TIMEOUT:?}"
        )));
    }
    let firewall_rules = d
        .map_list("firewallrules")
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            firewall_rule(rule).map_err(|e| d.error(format!("firewall rule #{}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Firewall::new(firewall_rules.iter().map(|r| (r.action, &r.matches)))
        .map_err(|e| d.error(e.to_string()))?;
    let limits = crate::netceptor::node::Limits {
        max_nodes: count(d, "maxnodes")?,
        max_connections: count(d, "maxconnections")?,
        max_ads: count(d, "maxadvertisements")?,
    };
    Ok(NodeCfg {
        id,
        datadir: PathBuf::from(datadir),
        max_idle_connection_timeout: timeout,
        firewall_rules,
        limits,
    })
}

/// A positive count parameter.
fn count(d: &Directive, field: &str) -> Result<usize, String> {
    let value = d.int(field);
    usize::try_from(value)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| d.error(format!("parameter {field}: {value} must be at least 1")))
}

/// The node ID: as given, else the host name (which must not be localhost
/// or `localhost.<domain>`). No node may be called by the local alias.
fn node_id(
    given: String,
    strict: bool,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<String, String> {
    let id = if given.is_empty() {
        let host = hostname().unwrap_or_default();
        let first_label = host.split('.').next().unwrap_or_default();
        let localhost = is_local_alias(first_label);
        if strict && (host.is_empty() || localhost) {
            return Err(if host.is_empty() {
                "no node ID specified and the local host name could not be determined".to_string()
            } else {
                "no node ID specified and local host name is localhost".to_string()
            });
        }
        host
    } else {
        given
    };
    if strict && is_local_alias(&id) {
        return Err(format!("node ID {id:?} is reserved"));
    }
    Ok(id)
}

/// The local host name, as the kernel reports it (or `$HOSTNAME`).
pub(crate) fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

const RULE_KEYS: &str = "action, fromnode, tonode, fromservice, toservice";

fn firewall_rule(map: &Mapping) -> Result<FirewallRuleCfg, String> {
    let mut action = None;
    let mut rule = RuleSpec::default();
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err("keys must be strings".to_string());
        };
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("{key} given more than once"));
        }
        let Value::String(value) = value else {
            return Err(format!("{key} must be a string"));
        };
        match key.as_str() {
            "action" => action = Some(firewall_action(value)?),
            "fromnode" => rule.from_node = matcher(value),
            "tonode" => rule.to_node = matcher(value),
            "fromservice" => rule.from_service = matcher(value),
            "toservice" => rule.to_service = matcher(value),
            _ => return Err(format!("unknown key {key:?} (known: {RULE_KEYS})")),
        }
        seen.push(key);
    }
    let action = action.ok_or_else(|| "action is required".to_string())?;
    Ok(FirewallRuleCfg {
        action,
        matches: rule,
    })
}

/// An empty matcher matches anything, as an absent one does.
fn matcher(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn firewall_action(value: &str) -> Result<FirewallAction, String> {
    match value.to_ascii_lowercase().as_str() {
        "accept" => Ok(FirewallAction::Accept),
        "reject" => Ok(FirewallAction::Reject),
        "drop" => Ok(FirewallAction::Drop),
        _ => Err(format!(
            "unknown action {value:?} (expected accept, reject or drop)"
        )),
    }
}

fn tcp_listener(d: &Directive) -> Result<TcpListenerCfg, String> {
    Ok(TcpListenerCfg {
        bind_addr: d.str("bindaddr"),
        port: port(d)?,
        tls: d.opt_str("tls"),
        cost: d.float("cost"),
        node_cost: d.float_map("nodecost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

fn udp_listener(d: &Directive) -> Result<UdpListenerCfg, String> {
    Ok(UdpListenerCfg {
        bind_addr: d.str("bindaddr"),
        port: port(d)?,
        cost: d.float("cost"),
        node_cost: d.float_map("nodecost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

fn udp_peer(d: &Directive) -> Result<UdpPeerCfg, String> {
    Ok(UdpPeerCfg {
        address: host_port(d)?,
        redial: d.bool("redial"),
        cost: d.float("cost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

fn ws_listener(d: &Directive) -> Result<WsListenerCfg, String> {
    // An empty path serves `/`, as when it is not given (Go panics on
    // an explicit empty one).
    let path = Some(d.str("path")).filter(|p| !p.is_empty());
    Ok(WsListenerCfg {
        bind_addr: d.str("bindaddr"),
        port: port(d)?,
        path: path.unwrap_or_else(|| "/".to_string()),
        tls: d.opt_str("tls"),
        cost: d.float("cost"),
        node_cost: d.float_map("nodecost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

fn ws_peer(d: &Directive) -> Result<WsPeerCfg, String> {
    let address = d.str("address");
    if !(address.starts_with("ws://") || address.starts_with("wss://")) {
        return Err(d.error(format!("address {address:?} must be a ws:// or wss:// URL")));
    }
    Ok(WsPeerCfg {
        address,
        redial: d.bool("redial"),
        extra_header: d.opt_str("extraheader"),
        tls: d.opt_str("tls"),
        cost: d.float("cost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

/// A peer's `address`, which must be `host:port`.
fn host_port(d: &Directive) -> Result<String, String> {
    let address = d.str("address");
    let has_port = crate::hostport::split(&address).is_some_and(|(_, port)| !port.is_empty());
    if !has_port {
        return Err(d.error(format!("address {address:?} must be host:port")));
    }
    Ok(address)
}

fn tcp_peer(d: &Directive) -> Result<TcpPeerCfg, String> {
    Ok(TcpPeerCfg {
        address: host_port(d)?,
        redial: d.bool("redial"),
        tls: d.opt_str("tls"),
        cost: d.float("cost"),
        allowed_peers: d.str_list("allowedpeers"),
    })
}

fn control_service(d: &Directive) -> Result<ControlServiceCfg, String> {
    Ok(ControlServiceCfg {
        service: d.str("service"),
        filename: d.opt_str("filename").map(PathBuf::from),
        permissions: permissions(d)?,
        tls: d.opt_str("tls"),
        tcp_listen: d.opt_str("tcplisten"),
        tcp_tls: d.opt_str("tcptls"),
        max_clients: count(d, "maxclients")?,
    })
}

fn proxy(d: &Directive) -> Result<ProxyCfg, String> {
    Ok(match d.name() {
        "tcp-server" => ProxyCfg::TcpServer {
            bind_addr: d.str("bindaddr"),
            port: port(d)?,
            remote_node: d.str("remotenode"),
            remote_service: d.str("remoteservice"),
            tls_server: d.opt_str("tlsserver"),
            tls_client: d.opt_str("tlsclient"),
        },
        "tcp-client" => ProxyCfg::TcpClient {
            service: d.str("service"),
            address: d.str("address"),
            tls_server: d.opt_str("tlsserver"),
            tls_client: d.opt_str("tlsclient"),
        },
        "udp-server" => ProxyCfg::UdpServer {
            bind_addr: d.str("bindaddr"),
            port: port(d)?,
            remote_node: d.str("remotenode"),
            remote_service: d.str("remoteservice"),
        },
        "udp-client" => ProxyCfg::UdpClient {
            service: d.str("service"),
            address: d.str("address"),
        },
        "unix-socket-server" => ProxyCfg::UnixSocketServer {
            filename: PathBuf::from(d.str("filename")),
            permissions: permissions(d)?,
            remote_node: d.str("remotenode"),
            remote_service: d.str("remoteservice"),
            tls: d.opt_str("tls"),
        },
        _ => ProxyCfg::UnixSocketClient {
            service: d.str("service"),
            filename: PathBuf::from(d.str("filename")),
            tls: d.opt_str("tls"),
        },
    })
}

fn opt_path(d: &Directive, field: &str) -> Option<PathBuf> {
    d.opt_str(field).map(PathBuf::from)
}

fn tls_server(d: &Directive) -> TlsServerCfg {
    TlsServerCfg {
        name: d.str("name"),
        cert: PathBuf::from(d.str("cert")),
        key: PathBuf::from(d.str("key")),
        require_client_cert: d.bool("requireclientcert"),
        client_cas: opt_path(d, "clientcas"),
        pinned_client_cert: d.str_list("pinnedclientcert"),
        skip_receptor_names_check: d.bool("skipreceptornamescheck"),
        min_tls13: d.bool("mintls13"),
    }
}

fn tls_client(d: &Directive) -> TlsClientCfg {
    TlsClientCfg {
        name: d.str("name"),
        cert: opt_path(d, "cert"),
        key: opt_path(d, "key"),
        root_cas: opt_path(d, "rootcas"),
        insecure_skip_verify: d.bool("insecureskipverify"),
        pinned_server_cert: d.str_list("pinnedservercert"),
        skip_receptor_names_check: d.bool("skipreceptornamescheck"),
        min_tls13: d.bool("mintls13"),
    }
}

fn cert_tool(d: &Directive) -> CertToolCfg {
    match d.name() {
        "cert-init" => CertToolCfg::Init(CertInitCfg {
            common_name: d.str("commonname"),
            bits: d.int("bits"),
            not_before: d.opt_str("notbefore"),
            not_after: d.opt_str("notafter"),
            out_cert: PathBuf::from(d.str("outcert")),
            out_key: PathBuf::from(d.str("outkey")),
        }),
        "cert-makereq" => CertToolCfg::MakeReq(CertMakeReqCfg {
            common_name: d.str("commonname"),
            bits: d.int("bits"),
            dns_names: d.str_list("dnsname"),
            ip_addresses: d.str_list("ipaddress"),
            node_ids: d.str_list("nodeid"),
            out_req: PathBuf::from(d.str("outreq")),
            in_key: opt_path(d, "inkey"),
            out_key: opt_path(d, "outkey"),
        }),
        _ => CertToolCfg::SignReq(CertSignReqCfg {
            req: PathBuf::from(d.str("req")),
            ca_cert: PathBuf::from(d.str("cacert")),
            ca_key: PathBuf::from(d.str("cakey")),
            not_before: d.opt_str("notbefore"),
            not_after: d.opt_str("notafter"),
            out_cert: PathBuf::from(d.str("outcert")),
            verify: d.bool("verify"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> impl FnOnce() -> Option<String> + '_ {
        move || Some(name.to_string())
    }

    #[test]
    fn node_id_defaults_and_checks() {
        assert_eq!(node_id("a".into(), true, host("h")), Ok("a".into()));
        assert_eq!(
            node_id(String::new(), true, host("box1")),
            Ok("box1".into())
        );
        for bad in ["localhost", "LocalHost", "localhost.localdomain"] {
            assert!(node_id(String::new(), true, host(bad)).is_err(), "{bad}");
        }
        assert!(node_id(String::new(), true, || None).is_err());
        assert_eq!(
            node_id("LOCALHOST".into(), true, host("h")),
            Err("node ID \"LOCALHOST\" is reserved".to_string())
        );
        assert_eq!(
            node_id(String::new(), false, host("localhost")),
            Ok("localhost".into())
        );
    }

    fn rule(yaml: &str) -> Result<FirewallRuleCfg, String> {
        let map: Mapping = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        firewall_rule(&map)
    }

    #[test]
    fn firewall_rules() {
        assert_eq!(
            rule("{Action: Reject, FromNode: /(?i)a.*b/, toservice: ''}"),
            Ok(FirewallRuleCfg {
                action: FirewallAction::Reject,
                matches: RuleSpec {
                    from_node: Some("/(?i)a.*b/".into()),
                    ..RuleSpec::default()
                },
            })
        );
        assert_eq!(
            rule("{action: DROP}").map(|r| r.action),
            Ok(FirewallAction::Drop)
        );
        assert_eq!(rule("{fromnode: a}"), Err("action is required".to_string()));
        assert!(rule("{action: allow}").is_err());
        assert!(rule("{action: accept, foo: x}").is_err());
        assert_eq!(
            rule("{action: accept, tonode: 5}"),
            Err("tonode must be a string".to_string())
        );
        assert!(rule("{action: accept, Action: drop}").is_err());
    }
}
