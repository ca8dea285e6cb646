//! End-to-end tests of `parse_args`: command line, YAML files and both merged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn invoke(args: &[String]) -> Result<Invocation, String> {
    parse_with_hostname(args, || Some("testhost".to_string())).map_err(|e| e.0)
}

fn run(s: &str) -> Result<Config, String> {
    run_args(&argv(s))
}

fn run_args(args: &[String]) -> Result<Config, String> {
    match invoke(args)? {
        Invocation::Run(config) => Ok(*config),
        other => Err(format!("unexpected {other:?}")),
    }
}

fn err(s: &str) -> String {
    run(s)
        .err()
        .unwrap_or_else(|| format!("no error for {s:?}"))
}

/// A YAML file under the temp dir, removed on drop.
struct TempYaml(PathBuf);

impl TempYaml {
    fn new(text: &str) -> TempYaml {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("receptor-config-test-{}-{n}.yaml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write temp config");
        TempYaml(path)
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempYaml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run_yaml(text: &str) -> Result<Config, String> {
    let file = TempYaml::new(text);
    run_args(&["-c".to_string(), file.arg()])
}

#[test]
fn cli_key_value_forms() {
    let c = run("--node id=foo --tcp-listener port=7323 cost=2.0").expect("valid");
    assert_eq!(c.node.id, "foo");
    assert_eq!(c.node.datadir, PathBuf::from("/tmp/receptor"));
    assert_eq!(c.node.max_idle_connection_timeout, Duration::from_secs(21));
    assert_eq!(
        c.tcp_listeners,
        vec![TcpListenerCfg {
            bind_addr: "0.0.0.0".into(),
            port: 7323,
            tls: None,
            cost: 2.0,
            node_cost: BTreeMap::new(),
            allowed_peers: vec![],
        }]
    );
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.unsupported.is_empty() && c.config_files.is_empty());
}

#[test]
fn cli_bare_values() {
    let c = run("--node foo --log-level debug --tcp-peer host:2222 --tcp-listener 2223")
        .expect("valid");
    assert_eq!(c.node.id, "foo");
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.tcp_peers[0].address, "host:2222");
    assert!(c.tcp_peers[0].redial);
    assert_eq!(c.tcp_peers[0].cost, 1.0);
    assert_eq!(c.tcp_listeners[0].port, 2223);
}

#[test]
fn cli_keys_are_case_insensitive() {
    let c = run("--Node ID=foo DataDir=/x --tcp-peer Address=h:1 REDIAL=false").expect("valid");
    assert_eq!(c.node.id, "foo");
    assert_eq!(c.node.datadir, PathBuf::from("/x"));
    assert!(!c.tcp_peers[0].redial);
    let c = run("--node a --work-command workType=w command=/bin/cat").expect("valid");
    assert_eq!(c.work_commands[0].work_type, "w");
    assert_eq!(c.work_commands[0].command, "/bin/cat");
}

#[test]
fn implicit_node_uses_hostname() {
    let c = run("--local-only").expect("valid");
    assert_eq!(c.node.id, "testhost");
    assert!(c.local_only);
    let e = parse_with_hostname(&argv("--local-only"), || Some("localhost".into()));
    assert_eq!(
        e.err().map(|e| e.0),
        Some("node: no node ID specified and local host name is localhost".to_string())
    );
    assert_eq!(
        err("--node LocalHost"),
        "node: node ID \"LocalHost\" is reserved"
    );
}

#[test]
fn log_level_variants() {
    assert_eq!(run("--log-level").map(|c| c.log_level), Ok(LogLevel::Error));
    assert_eq!(
        run("--log-level level=WARNING").map(|c| c.log_level),
        Ok(LogLevel::Warning)
    );
    assert!(err("--log-level loud").contains("not a valid log level"));
    assert_eq!(LogLevel::Warning.name(), "warning");
    assert_eq!(
        log::LevelFilter::from(LogLevel::Warning),
        log::LevelFilter::Warn
    );
}

#[test]
fn control_service_defaults_and_octal() {
    let c = run("--control-service").expect("valid");
    assert_eq!(
        c.control_services,
        vec![ControlServiceCfg {
            service: "control".into(),
            filename: None,
            permissions: 0o600,
            tls: None,
            tcp_listen: None,
            tcp_tls: None,
            max_clients: 256,
        }]
    );
    let c = run("--control-service service= filename=/s permissions=0640 tcplisten=8080")
        .expect("valid");
    let svc = &c.control_services[0];
    assert_eq!(svc.service, "");
    assert_eq!(svc.filename, Some(PathBuf::from("/s")));
    assert_eq!(svc.permissions, 416);
    assert_eq!(svc.tcp_listen.as_deref(), Some("8080"));
    let c = run("--control-service permissions=0x1ff").expect("valid");
    assert_eq!(c.control_services[0].permissions, 0o777);
    assert!(err("--control-service permissions=-1").contains("permissions"));
}

#[test]
fn allowed_peers_repeat_and_json() {
    let c = run(r#"--tcp-listener 1 allowedpeers=a allowedpeers=b allowedpeers=["c","d"]"#)
        .expect("valid");
    assert_eq!(c.tcp_listeners[0].allowed_peers, ["a", "b", "c", "d"]);
    let c = run_yaml("- tcp-peer: {address: 'h:1', allowedpeers: [x, y]}").expect("valid");
    assert_eq!(c.tcp_peers[0].allowed_peers, ["x", "y"]);
}

#[test]
fn nodecost_json_and_yaml() {
    let expect = BTreeMap::from([("n2".to_string(), 2.5), ("n3".to_string(), 3.0)]);
    let c = run(r#"--tcp-listener 1 nodecost={"n2":2.5,"n3":3}"#).expect("valid");
    assert_eq!(c.tcp_listeners[0].node_cost, expect);
    let c = run_yaml("- tcp-listener:\n    port: 1\n    nodecost:\n      n2: 2.5\n      n3: 3\n")
        .expect("valid");
    assert_eq!(c.tcp_listeners[0].node_cost, expect);
    assert_eq!(
        err(r#"--tcp-listener 1 nodecost={"n2":0}"#),
        "tcp-listener: nodecost for \"n2\" must be greater than 0"
    );
}

#[test]
fn yaml_forms() {
    let text = "
- node:
    id: yamlnode
    maxidleconnectiontimeout: 1m30s
- log-level: debug
- local-only
- trace:
- tcp-listener: 7323
- tcp-peer:
    Address: peer:7323
    cost: 2
    redial: no
- work-command:
    workType: echo
    command: /bin/echo
- work-command:
    worktype: cat
    command: /bin/cat
    allowruntimeparams: true
";
    let c = run_yaml(text).expect("valid");
    assert_eq!(c.node.id, "yamlnode");
    assert_eq!(c.node.max_idle_connection_timeout, Duration::from_secs(90));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(c.local_only && c.trace);
    assert_eq!(c.tcp_listeners[0].port, 7323);
    assert_eq!(c.tcp_peers[0].cost, 2.0);
    assert!(!c.tcp_peers[0].redial);
    assert_eq!(c.work_commands.len(), 2);
    assert!(c.work_commands[1].allow_runtime_params);
    assert!(c.unsupported.is_empty());
    assert_eq!(c.config_files.len(), 1);
}

#[test]
fn yaml_log_level_as_map() {
    let c = run_yaml("- log-level: {level: debug}").expect("valid");
    assert_eq!(c.log_level, LogLevel::Debug);
    let c = run_yaml("- log-level:").expect("valid");
    assert_eq!(c.log_level, LogLevel::Error);
}

#[test]
fn yaml_string_values_use_cli_rules() {
    let text = "- control-service: {permissions: '0600', service: 12}\n\
                - tcp-listener: {port: '0x10', cost: '1.5'}\n\
                - tcp-peer: {address: 'h:1', redial: 'N'}";
    let c = run_yaml(text).expect("valid");
    assert_eq!(c.control_services[0].permissions, 384);
    assert_eq!(c.control_services[0].service, "12");
    assert_eq!(c.tcp_listeners[0].port, 16);
    assert_eq!(c.tcp_listeners[0].cost, 1.5);
    assert!(!c.tcp_peers[0].redial);
}

#[test]
fn yaml_firewall_rules() {
    let text = "
- node:
    id: a
    firewallrules:
      - action: reject
        fromnode: /(?i)bad.*/
      - Action: accept
";
    let c = run_yaml(text).expect("valid");
    let rules = &c.node.firewall_rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].action, FirewallAction::Reject);
    assert_eq!(rules[0].matches.from_node.as_deref(), Some("/(?i)bad.*/"));
    assert_eq!(rules[1].action, FirewallAction::Accept);
    let e = run_yaml("- node: {id: a, firewallrules: [{action: accept, bogus: x}]}");
    let e = e.err().unwrap_or_default();
    assert!(
        e.contains("node: firewall rule #1: unknown key \"bogus\""),
        "{e}"
    );
    let e = run_yaml(
        "- node: {id: a, firewallrules: [{action: drop}, {action: drop, fromservice: /a(/}]}",
    );
    let e = e.err().unwrap_or_default();
    assert!(
        e.contains("node: firewall rule #2: fromservice: invalid regular expression \"/a(/\""),
        "{e}"
    );
    let e = run_yaml("- node: {id: a, firewallrules: [{action: accept, tonode: 5}]}");
    assert!(
        e.err()
            .unwrap_or_default()
            .contains("tonode must be a string")
    );
}

#[test]
fn merge_config_file_and_cli_in_order() {
    let file = TempYaml::new("- node: {id: fromfile}\n- tcp-listener: 1000\n");
    let mut args = argv("--tcp-peer other:1");
    args.extend(["--config".to_string(), file.arg()]);
    args.extend(argv("--tcp-listener 2000 --log-level info"));
    let c = run_args(&args).expect("valid");
    assert_eq!(c.node.id, "fromfile");
    let ports: Vec<u16> = c.tcp_listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [1000, 2000]);
    assert_eq!(c.tcp_peers.len(), 1);
    assert_eq!(c.config_files, vec![file.0.clone()]);

    let second = TempYaml::new("- ws-listener: 3000\n");
    let args = vec!["-c".into(), file.arg(), "-c".into(), second.arg()];
    let c = run_args(&args).expect("valid");
    assert_eq!(c.config_files, vec![file.0.clone(), second.0.clone()]);
    assert_eq!(c.ws_listeners[0].port, 3000);

    let mut args = vec!["-c".to_string(), file.arg()];
    args.extend(argv("--node again"));
    assert_eq!(
        run_args(&args).err().unwrap_or_default(),
        "node: only one node directive allowed"
    );
}

#[test]
fn config_file_errors() {
    let e = run("-c /nonexistent/receptor-test.yaml");
    let e = e.err().unwrap_or_default();
    assert!(
        e.starts_with("config file /nonexistent/receptor-test.yaml: "),
        "{e}"
    );
    let e = run_yaml("- node: [unclosed").err().unwrap_or_default();
    assert!(
        e.starts_with("config file ") && e.contains(".yaml: "),
        "{e}"
    );
    let e = run_yaml("node:\n  id: x\n").err().unwrap_or_default();
    assert!(e.contains("--config-v2"), "{e}");
    let e = run_yaml("- node: {id: a}\n- tcp-listener: {prot: 1}")
        .err()
        .unwrap_or_default();
    assert!(
        e.ends_with(
            ".yaml: item 2: tcp-listener: unknown parameter \"prot\" (known: bindaddr, \
                     port, tls, cost, nodecost, allowedpeers)"
        ),
        "{e}"
    );
    let e = run_yaml("- Node: {id: a}").err().unwrap_or_default();
    assert!(e.contains("must be written in lower case: \"node\""), "{e}");
}

#[test]
fn remote_is_no_configurable_work_type() {
    let go_text = "work type remote already registered";
    assert_eq!(
        err("--node id=a --work-command worktype=remote command=cat"),
        go_text
    );
    assert_eq!(
        err("--node id=a --work-kubernetes worktype=remote authmethod=incluster"),
        go_text
    );
    assert!(run("--node id=a --work-command worktype=remotely command=cat").is_ok());
}

#[test]
fn error_messages() {
    assert_eq!(
        err("--tcp-listener prot=1"),
        "tcp-listener: unknown parameter \"prot\" (known: bindaddr, port, tls, cost, nodecost, \
         allowedpeers)"
    );
    assert_eq!(
        err("--tcp-listener port=abc"),
        "tcp-listener: parameter port: invalid integer \"abc\""
    );
    assert_eq!(
        err("--tcp-listener port=70000"),
        "tcp-listener: parameter port: 70000 is out of range (0-65535)"
    );
    assert_eq!(
        err("--tcp-peer cost=1"),
        "tcp-peer: required parameter(s) missing: address"
    );
    assert_eq!(err("--tcp-listner 1"), "unknown directive \"tcp-listner\"");
    assert_eq!(
        err("--node a --node b"),
        "node: only one node directive allowed"
    );
    assert_eq!(
        err("--tcp-listener 1 cost=0"),
        "tcp-listener: cost must be greater than 0"
    );
    assert_eq!(
        err("--ws-peer ws://x cost=-2"),
        "ws-peer: cost must be greater than 0"
    );
    assert_eq!(err("foo"), "parameter specified before command: \"foo\"");
    assert!(err("--node a maxidleconnectiontimeout=10s").contains("less than the minimum"));
    assert!(err("--node a maxidleconnectiontimeout=abc").contains("invalid duration"));
    assert!(err("--tcp-peer nohostport").contains("must be host:port"));
    assert!(err("--tcp-peer h:1 redial=maybe").contains("invalid boolean \"maybe\""));
    assert_eq!(
        err("--local-only --trace --trace"),
        "trace: only one trace directive allowed"
    );
}

#[test]
fn unsupported_directives_are_validated_then_listed() {
    let c = run(
        "--node a --tls-server name=s cert=c key=k --ws-listener 8080 \
                 --udp-peer h:1 --work-signing privatekey=/k tokenexpiration=3h30m \
                 --work-kubernetes worktype=k --ip-router networkname=n localnet=10.0.0.1/30",
    )
    .expect("valid");
    assert_eq!(c.udp_peers[0].address, "h:1");
    assert_eq!(c.unsupported, ["ip-router"]);
    assert_eq!(
        c.tls_servers,
        [TlsServerCfg {
            name: "s".into(),
            cert: "c".into(),
            key: "k".into(),
            require_client_cert: false,
            client_cas: None,
            pinned_client_cert: vec![],
            skip_receptor_names_check: false,
            min_tls13: false,
        }]
    );
    let c = run(
        "--node a --tls-client name=c cert=c key=k rootcas=r insecureskipverify=true \
                 pinnedservercert=aa pinnedservercert=bb mintls13=true",
    )
    .expect("valid");
    assert_eq!(c.tls_clients[0].root_cas, Some("r".into()));
    assert!(c.tls_clients[0].insecure_skip_verify && c.tls_clients[0].min_tls13);
    assert_eq!(c.tls_clients[0].pinned_server_cert, ["aa", "bb"]);
    assert!(c.unsupported.is_empty());
    assert_eq!(
        err("--tls-server name=s"),
        "tls-server: required parameter(s) missing: cert, key"
    );
    assert!(err("--work-signing tokenexpiration=3").contains("invalid duration"));
    assert!(err("--udp-listener 1 bogus=1").contains("unknown parameter \"bogus\""));
    assert!(err("--work-kubernetes worktype=k allowruntimepod=perhaps").contains("boolean"));
    assert_eq!(
        err("--work-verification a --work-verification b"),
        "work-verification: only one work-verification directive allowed"
    );
}

#[test]
fn version_and_exclusive_tools() {
    assert_eq!(invoke(&argv("--version")), Ok(Invocation::Version));
    assert_eq!(
        invoke(&argv("--version --node a")).err(),
        Some("cannot specify any other options with version".to_string())
    );
    assert_eq!(
        invoke(&argv(
            "--node a --cert-init commonname=CA bits=2048 outcert=c outkey=k"
        ))
        .err(),
        Some("cannot specify any other options with cert-init".to_string())
    );
    assert!(invoke(&argv("--version x")).is_err());
    let c = run("--cert-makereq commonname=x outreq=r outkey=k nodeid=a nodeid=b").expect("valid");
    assert!(c.unsupported.is_empty());
    assert_eq!(
        c.cert_tool,
        Some(CertToolCfg::MakeReq(CertMakeReqCfg {
            common_name: "x".into(),
            bits: 0,
            dns_names: vec![],
            ip_addresses: vec![],
            node_ids: vec!["a".into(), "b".into()],
            out_req: "r".into(),
            in_key: None,
            out_key: Some("k".into()),
        }))
    );
    let exclusive = parse_with_hostname(
        &argv("--cert-signreq req=r cacert=c cakey=k outcert=o"),
        || Some("localhost".into()),
    );
    assert!(matches!(exclusive, Ok(Invocation::Run(_))));
    let file = TempYaml::new("- version\n");
    assert_eq!(
        invoke(&["-c".to_string(), file.arg()]),
        Ok(Invocation::Version)
    );
}

#[test]
fn help_forms() {
    let help = Ok(Invocation::Help(help_text()));
    assert_eq!(invoke(&[]), help);
    assert_eq!(invoke(&argv("-h")), help);
    assert_eq!(invoke(&argv("--node a --help")), help);
    assert_eq!(invoke(&argv("--version --help")), help);
    let completion = invoke(&argv("--bash-completion"));
    assert_eq!(completion, Ok(Invocation::Help(bash_completion())));
}

#[test]
fn arbitrary_input_never_panics() {
    let tokens = [
        "-",
        "--",
        "-c",
        "=",
        "x=",
        "=y",
        "--node",
        "--tcp-listener",
        "port=",
        "9",
        "--version",
        "nodecost={",
        "allowedpeers=[",
        "--work-python",
        "config={\"a\":1}",
        "",
    ];
    for a in tokens {
        for b in tokens {
            for c in tokens {
                let args = vec![a.to_string(), b.to_string(), c.to_string()];
                let _ = invoke(&args);
            }
        }
    }
    let docs = [
        "- {}",
        "- ~",
        "- [1]",
        "- node: !tag {id: a}",
        "- tcp-listener: {port: 1e400}",
        "- tcp-listener: {port: 18446744073709551615}",
        "- node: {id: [a]}",
        "---\n- trace\n",
        "- control-service: {permissions: .nan}",
        "[",
        "- tcp-listener: {nodecost: [1]}",
    ];
    for d in docs {
        let _ = run_yaml(d);
    }
}

#[test]
fn node_limits_and_control_client_limit() {
    let c = run("--node id=a").expect("valid");
    assert_eq!(c.node.limits, crate::netceptor::node::Limits::default());
    let c = run("--node id=a maxnodes=5 maxconnections=6 maxadvertisements=7").expect("valid");
    let l = &c.node.limits;
    assert_eq!((l.max_nodes, l.max_connections, l.max_ads), (5, 6, 7));
    assert!(err("--node id=a maxnodes=0").contains("maxnodes: 0 must be at least 1"));
    let c = run("--node id=a --control-service maxclients=3").expect("valid");
    assert_eq!(c.control_services[0].max_clients, 3);
    assert!(err("--node id=a --control-service maxclients=-1").contains("maxclients"));
}

#[test]
fn node_ids_that_could_not_be_routed_are_refused() {
    let long = "x".repeat(254);
    assert!(err(&format!("--node id={long}")).contains("is 254 bytes long (at most 253)"));
    assert!(err("--node id=../x").contains("contains a control character or '/'"));
    assert!(run(&format!("--node id={}", "x".repeat(253))).is_ok());
}

#[test]
fn oversized_config_files_are_refused_before_parsing() {
    let big = format!("- node: {{id: a}}\n#{}\n", "x".repeat(2 * 1024 * 1024));
    let e = run_yaml(&big).err().unwrap_or_default();
    assert!(e.contains("file is larger than 1048576 bytes"), "{e}");
}

#[test]
fn work_signing_and_verification() {
    let c = run(
        "--node a --local-only --work-signing privatekey=/k tokenexpiration=3h30m \
                 --work-verification publickey=/p \
                 --work-command worktype=w command=cat verifysignature=true",
    )
    .expect("valid");
    let signing = c.work_signing.expect("work-signing");
    assert_eq!(signing.private_key, PathBuf::from("/k"));
    assert_eq!(
        signing.token_expiration,
        Some(Duration::from_secs(3 * 3600 + 1800))
    );
    assert_eq!(
        c.work_verification.expect("work-verification").public_key,
        PathBuf::from("/p")
    );
    assert!(c.work_commands[0].verify_signature);
    let c = run("--node a --work-signing /k").expect("valid");
    assert_eq!(c.work_signing.expect("work-signing").token_expiration, None);
    assert_eq!(
        err("--node a --work-command worktype=w command=cat verifysignature=true"),
        "VerifySignature for work command 'w' is true, but the work verification public key is not specified"
    );
}

fn run_v2(text: &str) -> Result<Config, String> {
    let file = TempYaml::new(text);
    let c = run_args(&[
        "--config-v2".to_string(),
        "--config".to_string(),
        file.arg(),
    ])?;
    assert_eq!(c.config_files, vec![file.0.clone()]);
    Ok(c)
}

fn v2_err(text: &str) -> String {
    run_v2(text)
        .err()
        .unwrap_or_else(|| format!("no error for {text:?}"))
}

const V2_MANY: &str = "
node:
  id: v2node
  DataDir: /tmp/v2data
  maxidleconnectiontimeout: 30s
  firewallrules:
    - {action: reject, fromnode: bad}
log-level: {level: Debug}
trace:
tls-servers:
  - {name: srv, cert: /c.pem, key: /k.pem, requireclientcert: true}
tls-clients:
  - {name: cli, cert: /c.pem, key: /k.pem, pinnedservercert: [aa, bb]}
tcp-listeners:
  - {port: 7323, tls: srv, nodecost: {n2: 2.5}}
  - {port: '7324', bindaddr: 127.0.0.1, allowedpeers: [a, b]}
tcp-peers:
  - {address: 'host:7323', cost: 2, tls: cli, redial: false}
udp-listeners:
  - {port: 7325}
udp-peers:
  - {address: 'h:1'}
ws-listeners:
  - {port: 8080, path: /mesh}
ws-peers:
  - {address: 'wss://h/x', extraheader: 'X-A:b'}
control-services:
  - {filename: /tmp/ctl.sock}
  - {service: other, tcplisten: '127.0.0.1:9999', tcptls: srv, permissions: 0640}
work-commands:
  - {worktype: echo, command: cat, allowruntimeparams: true}
  - {workType: signed, command: cat, verifysignature: true}
work-verification: {publickey: /pub.pem}
work-signing: {privatekey: /priv.pem, tokenexpiration: 1h}
work-kubernetes:
  - {worktype: kube, namespace: ns, image: img}
tcp-servers:
  - {port: 1000, remotenode: a, remoteservice: b}
tcp-clients:
  - {service: s, address: 'h:2'}
udp-servers:
  - {port: 1001, remotenode: a, remoteservice: b}
udp-clients:
  - {service: us, address: 'h:3'}
unix-socket-servers:
  - {filename: /tmp/u.sock, remotenode: a, remoteservice: b}
unix-socket-clients:
  - {service: uc, filename: /tmp/uc.sock}
iprouters:
  - {networkname: n, localnet: 10.0.0.1/30}
local-only:
";

const LEGACY_MANY: &str = "
- node:
    id: v2node
    DataDir: /tmp/v2data
    maxidleconnectiontimeout: 30s
    firewallrules:
      - {action: reject, fromnode: bad}
- log-level: {level: Debug}
- trace
- tls-server: {name: srv, cert: /c.pem, key: /k.pem, requireclientcert: true}
- tls-client: {name: cli, cert: /c.pem, key: /k.pem, pinnedservercert: [aa, bb]}
- tcp-listener: {port: 7323, tls: srv, nodecost: {n2: 2.5}}
- tcp-listener: {port: '7324', bindaddr: 127.0.0.1, allowedpeers: [a, b]}
- tcp-peer: {address: 'host:7323', cost: 2, tls: cli, redial: false}
- udp-listener: {port: 7325}
- udp-peer: {address: 'h:1'}
- ws-listener: {port: 8080, path: /mesh}
- ws-peer: {address: 'wss://h/x', extraheader: 'X-A:b'}
- control-service: {filename: /tmp/ctl.sock}
- control-service: {service: other, tcplisten: '127.0.0.1:9999', tcptls: srv, permissions: 0640}
- work-command: {worktype: echo, command: cat, allowruntimeparams: true}
- work-command: {workType: signed, command: cat, verifysignature: true}
- work-verification: {publickey: /pub.pem}
- work-signing: {privatekey: /priv.pem, tokenexpiration: 1h}
- work-kubernetes: {worktype: kube, namespace: ns, image: img}
- tcp-server: {port: 1000, remotenode: a, remoteservice: b}
- tcp-client: {service: s, address: 'h:2'}
- udp-server: {port: 1001, remotenode: a, remoteservice: b}
- udp-client: {service: us, address: 'h:3'}
- unix-socket-server: {filename: /tmp/u.sock, remotenode: a, remoteservice: b}
- unix-socket-client: {service: uc, filename: /tmp/uc.sock}
- ip-router: {networkname: n, localnet: 10.0.0.1/30}
- local-only
";

#[test]
fn v2_file_equals_its_legacy_twin() {
    let v2 = run_v2(V2_MANY).expect("valid v2");
    let mut legacy = run_yaml(LEGACY_MANY).expect("valid legacy");
    legacy.config_files = v2.config_files.clone();
    assert_eq!(v2, legacy);
    // Spot checks that the twin is not trivially empty.
    assert_eq!(v2.node.id, "v2node");
    assert_eq!(v2.log_level, LogLevel::Debug);
    assert!(v2.trace && v2.local_only);
    assert_eq!(v2.tcp_listeners.len(), 2);
    assert_eq!(v2.control_services[1].permissions, 0o640);
    assert_eq!(v2.proxies.len(), 6);
    assert_eq!(v2.unsupported, ["ip-router"]);
}

/// Go types `udp-servers` and `udp-clients` as TCP inbound proxies.
#[test]
fn v2_udp_proxies_are_udp() {
    let c = run_v2(V2_MANY).expect("valid");
    let udp: Vec<&ProxyCfg> = c
        .proxies
        .iter()
        .filter(|p| matches!(p, ProxyCfg::UdpServer { .. } | ProxyCfg::UdpClient { .. }))
        .collect();
    assert_eq!(
        udp,
        [
            &ProxyCfg::UdpServer {
                bind_addr: "0.0.0.0".into(),
                port: 1001,
                remote_node: "a".into(),
                remote_service: "b".into(),
            },
            &ProxyCfg::UdpClient {
                service: "us".into(),
                address: "h:3".into(),
            },
        ]
    );
}

#[test]
fn v2_defaults() {
    let c = run_v2(
        "
tcp-listeners: [{port: 1}]
tcp-peers: [{address: 'h:1'}]
udp-peers: [{address: 'h:2'}]
ws-peers: [{address: 'ws://h/'}]
ws-listeners: [{port: 2}, {port: 3, path: ''}]
control-services: [{}]
unix-socket-servers: [{filename: /u, remotenode: a, remoteservice: b}]
work-kubernetes: [{worktype: k}]
",
    )
    .expect("valid");
    assert_eq!(c.node.id, "testhost");
    assert_eq!(c.node.datadir, PathBuf::from("/tmp/receptor"));
    assert_eq!(c.log_level, LogLevel::Info);
    let l = &c.tcp_listeners[0];
    assert_eq!((l.bind_addr.as_str(), l.cost), ("0.0.0.0", 1.0));
    assert!(c.tcp_peers[0].redial && c.udp_peers[0].redial && c.ws_peers[0].redial);
    assert_eq!(c.tcp_peers[0].cost, 1.0);
    let paths: Vec<&str> = c.ws_listeners.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["/", "/"]);
    let ctl = &c.control_services[0];
    assert_eq!((ctl.service.as_str(), ctl.permissions), ("control", 0o600));
    assert!(matches!(
        c.proxies[0],
        ProxyCfg::UnixSocketServer {
            permissions: 0o600,
            ..
        }
    ));
    let k = &c.work_kubernetes[0];
    assert_eq!(
        (k.auth_method.as_str(), k.stream_method.as_str()),
        ("incluster", "logger")
    );
    assert!(k.delete_pod_on_restart);
    // Present without a level: error, as in the legacy form.
    assert_eq!(
        run_v2("log-level:").expect("valid").log_level,
        LogLevel::Error
    );
    assert_eq!(
        run_v2("log-level: {}").expect("valid").log_level,
        LogLevel::Error
    );
    // Go forces redial on; an explicit false is kept here.
    assert!(
        !run_v2("tcp-peers: [{address: 'h:1', redial: false}]")
            .expect("valid")
            .tcp_peers[0]
            .redial
    );
    // A single map is a list of one, as Go's decoder takes it.
    let c = run_v2(
        "tcp-peers: {address: 'h:1'}\nip-routers: [{networkname: n, localnet: 10.0.0.1/30}]",
    );
    let c = c.expect("valid");
    assert_eq!((c.tcp_peers.len(), c.unsupported.len()), (1, 1));
    assert!(run_v2("").expect("empty file").tcp_listeners.is_empty());
}

#[test]
fn v2_errors() {
    let e = v2_err("tcp-listener: [{port: 1}]");
    assert!(e.ends_with(".yaml: unknown section \"tcp-listener\" (known: node, trace, log-level, \
                         control-services, tls-clients, tls-servers, work-commands, work-kubernetes, \
                         work-signing, work-verification, iprouters, ip-routers, tcp-clients, \
                         tcp-servers, udp-clients, udp-servers, unix-socket-clients, \
                         unix-socket-servers, cert-init, cert-makereqs, cert-signreqs, \
                         tcp-listeners, udp-listeners, ws-listeners, tcp-peers, udp-peers, ws-peers, \
                         local-only)"), "{e}");
    let e = v2_err("tcp-listeners: [{port: 1}, {prot: 1}]");
    assert!(
        e.ends_with(
            ".yaml: tcp-listeners item 2: tcp-listener: unknown parameter \"prot\" \
                         (known: bindaddr, port, tls, cost, nodecost, allowedpeers)"
        ),
        "{e}"
    );
    let e = v2_err("tcp-listeners: [{port: abc}]");
    assert!(
        e.ends_with(
            ".yaml: tcp-listeners item 1: tcp-listener: parameter port: invalid integer \"abc\""
        ),
        "{e}"
    );
    let e = v2_err("tcp-listeners: [{port: [1]}]");
    assert!(
        e.contains("tcp-listeners item 1: tcp-listener: parameter port: "),
        "{e}"
    );
    let e = v2_err("node: [{id: a}]");
    assert!(
        e.ends_with(".yaml: node: expected a map of fields, got a list"),
        "{e}"
    );
    let e = v2_err("work-signing: [{privatekey: /k}]");
    assert!(
        e.ends_with(".yaml: work-signing: expected a map of fields, got a list"),
        "{e}"
    );
    let e = v2_err("node: {id: a, bogus: 1}");
    assert!(
        e.contains(".yaml: node: unknown parameter \"bogus\""),
        "{e}"
    );
    let e = v2_err("tcp-peers: [{cost: 2}]");
    assert!(
        e.ends_with("tcp-peers item 1: tcp-peer: required parameter(s) missing: address"),
        "{e}"
    );
    let e = v2_err("tcp-listeners: [{port: 1, cost: 0}]");
    assert!(
        e.ends_with("tcp-listeners item 1: tcp-listener: cost must be greater than 0"),
        "{e}"
    );
    let e = v2_err("node: {id: a}\ncert-makereqs: [{commonname: x, outreq: r, outkey: k}]");
    assert_eq!(e, "cannot specify any other options with cert-makereq");
    let e = v2_err("- node: {id: a}");
    assert!(e.contains("legacy format"), "{e}");
    let file = TempYaml::new("node: {id: a}\nlocal-only:\n");
    let e = run_args(&argv(&format!(
        "--config-v2 --config {} --node b",
        file.arg()
    )));
    assert!(
        e.err()
            .unwrap_or_default()
            .starts_with("\"--node\" is not accepted with --config-v2")
    );
    let e = run_args(&argv(&format!("-c {} --config-v2", file.arg())));
    assert!(
        e.err()
            .unwrap_or_default()
            .starts_with("\"-c\" is not accepted")
    );
    // The legacy reader points a v2 file at --config-v2.
    let e = run_args(&argv(&format!("-c {}", file.arg())))
        .err()
        .unwrap_or_default();
    assert!(e.contains("--config-v2 --config FILE"), "{e}");
    let e = run_args(&argv("--config-v2 --config /nonexistent/receptor-v2.yaml"));
    assert!(
        e.err()
            .unwrap_or_default()
            .starts_with("config file /nonexistent/receptor-v2.yaml: ")
    );
}

#[test]
fn v2_flags_help_version_and_default_file() {
    assert_eq!(
        invoke(&argv("--config-v2 --version")),
        Ok(Invocation::Version)
    );
    let help = Ok(Invocation::Help(v2_help_text()));
    assert_eq!(invoke(&argv("--config-v2 -h")), help);
    assert_eq!(invoke(&argv("--help --config-v2")), help);
    assert!(v2_help_text().contains("   tcp-listeners: [tcp-listener, ...]\n"));
    let dir = std::env::temp_dir().join(format!("receptor-v2-home-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp home");
    let missing = default_v2_file(Some(dir.clone()));
    assert_eq!(
        missing,
        Err("Could not locate config file (default is $HOME/receptor.yaml)".to_string())
    );
    assert!(default_v2_file(None).is_err());
    std::fs::write(dir.join("receptor.yaml"), "node: {id: fromhome}\n").expect("write");
    let found = default_v2_file(Some(dir.clone()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found, Ok(dir.join("receptor.yaml")));
}

#[test]
fn v2_arbitrary_input_never_panics() {
    let docs = [
        "node: !tag {id: a}",
        "tcp-listeners: [~, {}, [], 1]",
        "tcp-listeners: !t [{port: 1e400}]",
        "version: -1",
        "version: [2]",
        "? [a]\n: b",
        "log-level: {level: [x]}",
        "node: {firewallrules: {action: drop}}",
    ];
    for d in docs {
        let _ = run_v2(d);
    }
}

#[test]
fn runner_directives_are_hidden_process_roles() {
    let server = run("--node id=worker --log-level error --command-runner-server").unwrap();
    assert!(server.command_runner_server);
    assert_eq!(server.command_runner, None);
    let runner = run("--node id=worker --command-runner command=cat params= unitdir=/u").unwrap();
    assert!(!runner.command_runner_server);
    assert_eq!(runner.command_runner.map(|r| r.unit_dir), Some("/u".into()));
}
