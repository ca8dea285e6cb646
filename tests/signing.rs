//! Work signing end to end (docs/work.md §8): a controller with
//! `work-signing` submits through receptorctl over TCP control to an
//! executor whose work type has `verifysignature`; the executor refuses
//! unsigned, foreign, expired, misaddressed and tampered tokens with Go's
//! texts, and callers on its Unix socket need no signature at all.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::pki::Pki;
use common::{
    CMD_TIMEOUT, Node, RECEPTOR, TempDir, free_port, output_with_input, output_within, receptorctl,
    secs, show, text, unit_id, verifying_echo, wait_until,
};
use receptor::work::signing::{Keys, sign_token};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::rand_core::OsRng;
use serde_json::Value;

/// Writes `signing.key` (PKCS#8) and `signing.pub` (PKIX) into `dir`;
/// returns the private key.
fn write_keys(dir: &Path, name: &str) -> RsaPrivateKey {
    let key = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let private = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), private.as_bytes()).unwrap();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.pub")), public).unwrap();
    key
}

/// receptorctl talking TCP to `port`.
fn ctl_tcp(port: u16, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(receptorctl());
    cmd.arg("--socket")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(args);
    cmd.env_remove("RECEPTORCTL_SOCKET");
    output_with_input(cmd, input, CMD_TIMEOUT)
}

/// A raw TCP control connection, greeting read.
struct Tcp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Tcp {
    fn open(port: u16) -> Tcp {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(secs(20))).unwrap();
        let mut c = Tcp {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        };
        let greeting = c.line();
        assert!(greeting.starts_with("Receptor Control"), "{greeting}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }

    fn cmd(&mut self, json: &Value) -> String {
        self.writer
            .write_all(format!("{json}\n").as_bytes())
            .unwrap();
        self.line()
    }
}

/// The reply to a submit of `work_type` with `signature` (if any), on a
/// fresh TCP control connection; a created unit gets its stdin.
fn submit_tcp(port: u16, work_type: &str, signature: Option<&str>) -> String {
    let mut req = serde_json::json!({
        "command": "work", "subcommand": "submit", "node": "localhost", "worktype": work_type,
    });
    if let Some(sig) = signature {
        req["signature"] = sig.into();
    }
    let mut c = Tcp::open(port);
    let reply = c.cmd(&req);
    if reply.starts_with("Work unit created") {
        c.writer.write_all(b"direct\n").unwrap();
        c.writer.shutdown(std::net::Shutdown::Write).unwrap();
        let result = c.line();
        assert!(result.contains("Job Started"), "{result}");
    }
    reply
}

fn unit_command_tcp(port: u16, sub: &str, unit: &str, signature: Option<&str>) -> String {
    let mut req = serde_json::json!({"command": "work", "subcommand": sub, "unitid": unit});
    if sub == "results" {
        req["startpos"] = 0.into();
    }
    if let Some(sig) = signature {
        req["signature"] = sig.into();
    }
    Tcp::open(port).cmd(&req)
}

fn status(node: &Node, id: &str) -> Value {
    let line = node.connect().cmd(&format!("work status {id}"));
    serde_json::from_str(&line).unwrap_or(Value::Null)
}

fn wait_state(node: &Node, id: &str, state: i64) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(secs(60), || {
        last = status(node, id);
        last["State"] == state
    });
    assert!(
        ok,
        "unit {id} on {} never reached {state}: {last}\n{}",
        node.id,
        node.log_tail(30)
    );
    last
}

fn unit_ids(node: &Node) -> Vec<String> {
    let line = node.connect().cmd("work list");
    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn signed_work_over_tcp_control_and_every_refusal() {
    let tmp = TempDir::new("signing");
    let dir = tmp.path.as_path();
    let key = write_keys(dir, "signing");
    let stranger = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let (mesh, exec_ctl, ctrl_ctl) = (free_port(), free_port(), free_port());
    let exec = Node::start_full(
        "exec",
        "",
        &format!("    tcplisten: 127.0.0.1:{exec_ctl}"),
        &[
            vec![
                format!("- tcp-listener:\n    port: {mesh}"),
                "- work-command:\n    worktype: plain\n    command: cat".into(),
            ],
            verifying_echo(&dir.join("signing.pub")).into(),
        ]
        .concat(),
    );
    let ctrl = Node::start_full(
        "ctrl",
        "",
        &format!("    tcplisten: 127.0.0.1:{ctrl_ctl}"),
        &[
            common::peer(mesh, 1.0),
            format!(
                "- work-signing:\n    privatekey: {:?}\n    tokenexpiration: 10m",
                dir.join("signing.key")
            ),
        ],
    );
    assert!(
        wait_until(secs(30), || ctrl.route("exec").is_some()),
        "no route: {}",
        ctrl.log_tail(20)
    );

    // receptorctl --signwork over TCP control: the controller signs, the
    // executor verifies submit and results, and the release is signed too.
    let out = ctl_tcp(
        ctrl_ctl,
        &[
            "work",
            "submit",
            "echo",
            "--node",
            "exec",
            "--signwork",
            "-l",
            "signed hello",
        ],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let id = unit_id(&out);
    let st = wait_state(&ctrl, &id, 2);
    assert_eq!(st["ExtraData"]["SignWork"], true, "{st}");
    let out = ctrl.ctl(&["work", "results", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "signed hello\n",
        "{}",
        show(&out)
    );
    assert_eq!(unit_ids(&exec).len(), 1);
    let out = ctrl.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(secs(30), || unit_ids(&exec).is_empty()),
        "the executor's unit was not released: {:?}\n{}",
        unit_ids(&exec),
        exec.log_tail(20)
    );

    // Unsigned, through the controller: the executor's refusal comes back.
    let out = ctl_tcp(
        ctrl_ctl,
        &["work", "submit", "echo", "--node", "exec", "-l", "x"],
        None,
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out).contains("could not verify signature: signature is empty"),
        "{}",
        show(&out)
    );

    // Straight to the executor's TCP control port.
    let now = SystemTime::now();
    let valid = sign_token(&key, "exec", now + secs(60)).unwrap();
    assert!(submit_tcp(exec_ctl, "echo", Some(&valid)).starts_with("Work unit created with ID "));
    assert_eq!(
        submit_tcp(exec_ctl, "echo", None),
        "ERROR: could not verify signature: signature is empty"
    );
    let other_node = sign_token(&key, "ctrl", now + secs(60)).unwrap();
    assert_eq!(
        submit_tcp(exec_ctl, "echo", Some(&other_node)),
        "ERROR: token audience did not match node ID"
    );
    let expired = sign_token(&key, "exec", now - secs(30)).unwrap();
    let reply = submit_tcp(exec_ctl, "echo", Some(&expired));
    assert!(
        reply.starts_with("ERROR: could not verify signature: token is expired by 3"),
        "{reply}"
    );
    let foreign = sign_token(&stranger, "exec", now + secs(60)).unwrap();
    let bad_sig = "ERROR: could not verify signature: crypto/rsa: verification error";
    assert_eq!(submit_tcp(exec_ctl, "echo", Some(&foreign)), bad_sig);
    let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
    let other = sign_token(&key, "exec", now + secs(3600)).unwrap();
    parts[1] = other.split('.').nth(1).unwrap().to_string();
    assert_eq!(
        submit_tcp(exec_ctl, "echo", Some(&parts.join("."))),
        bad_sig
    );
    assert_eq!(
        submit_tcp(exec_ctl, "echo", Some("a.b")),
        "ERROR: could not verify signature: token contains an invalid number of segments"
    );
    assert_eq!(
        submit_tcp(exec_ctl, "plain", Some(&valid)),
        "ERROR: work type did not expect a signature"
    );
    assert!(submit_tcp(exec_ctl, "plain", None).starts_with("Work unit created"));

    // The Unix socket is exempt, for submit and everything after.
    let out = exec.ctl_with_input(&["work", "submit", "echo", "-p", "-", "-f"], b"local\n");
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out).contains("local"), "{}", show(&out));
    let local = unit_ids(&exec)
        .into_iter()
        .find(|u| {
            let st = status(&exec, u);
            st["WorkType"] == "echo" && st["State"] == 2
        })
        .expect("a finished echo unit");

    // Over TCP, results, cancel and release of a verifying type's unit
    // need a signature; status and list never do.
    assert_eq!(
        unit_command_tcp(exec_ctl, "results", &local, None),
        "ERROR: could not verify signature: signature is empty"
    );
    assert_eq!(
        unit_command_tcp(exec_ctl, "release", &local, Some(&foreign)),
        bad_sig
    );
    assert!(unit_command_tcp(exec_ctl, "status", &local, None).contains("\"State\":2"));
    assert_eq!(
        unit_command_tcp(exec_ctl, "results", &local, Some(&valid)),
        format!("Streaming results for work unit {local}")
    );
    assert_eq!(
        unit_command_tcp(exec_ctl, "release", &local, Some(&valid)),
        format!("{{\"released\":\"{local}\"}}")
    );
    assert_eq!(
        unit_command_tcp(exec_ctl, "cancel", "nosuch", Some(&valid)),
        "ERROR: unknown work unit nosuch"
    );

    // A node without work-signing cannot sign.
    let out = exec.ctl(&[
        "work",
        "submit",
        "echo",
        "--node",
        "ctrl",
        "--signwork",
        "-n",
    ]);
    assert!(
        text(&out).contains("cannot sign work: signing key is empty"),
        "{}",
        show(&out)
    );
}

/// receptorctl `--signwork` over the TLS control port, to an executor
/// reached over its TLS mesh control service: the transports differ, the
/// signing does not.
#[test]
fn signwork_over_tls_control_to_a_tls_control_service() {
    let tmp = TempDir::new("signing-tls");
    let dir = tmp.path.as_path();
    write_keys(dir, "signing");
    let pki = Pki::new(&dir.join("pki"), "Signing CA");
    let ca = pki.ca();
    let (mesh, ctl_port) = (free_port(), free_port());
    let exec_cert = pki.node("exec");
    let exec = Node::start_full(
        "exec",
        "",
        "    tls: srv",
        &[
            vec![
                exec_cert.server("srv", &ca),
                format!("- tcp-listener:\n    port: {mesh}"),
            ],
            verifying_echo(&dir.join("signing.pub")).into(),
        ]
        .concat(),
    );
    let ctrl_cert = pki.node("ctrl");
    let ctrl = Node::start_full(
        "ctrl",
        "",
        &format!("    tcplisten: 127.0.0.1:{ctl_port}\n    tcptls: srv"),
        &[
            ctrl_cert.server("srv", &ca),
            ctrl_cert.client("cli", &ca, ""),
            common::peer(mesh, 1.0),
            format!(
                "- work-signing:\n    privatekey: {:?}",
                dir.join("signing.key")
            ),
        ],
    );
    assert!(wait_until(secs(30), || ctrl.route("exec").is_some()));
    let socket = format!("tls://127.0.0.1:{ctl_port}");
    let (cert, key, ca_text) = (
        ctrl_cert.cert.display().to_string(),
        ctrl_cert.key.display().to_string(),
        ca.display().to_string(),
    );
    let mut cmd = Command::new(receptorctl());
    cmd.args([
        "--socket",
        &socket,
        "--rootcas",
        &ca_text,
        "--cert",
        &cert,
        "--key",
        &key,
    ])
    .args(["work", "submit", "echo", "--node", "exec", "--signwork"])
    .args(["--tls-client", "cli", "-l", "over tls"])
    .env_remove("RECEPTORCTL_SOCKET");
    let out = output_with_input(cmd, None, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{}\n{}",
        show(&out),
        ctrl.log_tail(20)
    );
    let id = unit_id(&out);
    wait_state(&ctrl, &id, 2);
    let out = ctrl.ctl(&["work", "results", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "over tls\n",
        "{}",
        show(&out)
    );
    let out = ctrl.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(wait_until(secs(30), || unit_ids(&exec).is_empty()));
}

/// Runs `receptor args...` to completion.
fn receptor(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(RECEPTOR);
    cmd.args(args).current_dir(dir);
    output_within(cmd, CMD_TIMEOUT)
}

fn openssl(dir: &Path, args: &[&str]) -> Option<Output> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    assert!(out.status.success(), "openssl {args:?}: {}", show(&out));
    Some(out)
}

#[test]
fn keys_from_openssl_and_from_our_cert_tool() {
    let tmp = TempDir::new("signing-keys");
    let dir = tmp.path.as_path();
    let out = receptor(
        dir,
        &[
            "--cert-init",
            "commonname=CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let pkcs1 = std::fs::read_to_string(dir.join("ca.key")).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let Some(_) = openssl(dir, &["genrsa", "-out", "genrsa.key", "2048"]) else {
        println!("skipped: no openssl");
        return;
    };
    for (private, public) in [("ca.key", "ca.pub"), ("genrsa.key", "genrsa.pub")] {
        openssl(dir, &["rsa", "-in", private, "-pubout", "-out", public]).unwrap();
        let keys = Keys::load(
            Some((&dir.join(private), Some(Duration::from_secs(60)))),
            Some(&dir.join(public)),
        )
        .unwrap_or_else(|e| panic!("{private}: {e}"));
        let token = keys.sign("exec", SystemTime::now()).unwrap();
        assert_eq!(
            keys.check(true, &token, false, "exec", SystemTime::now()),
            Ok(()),
            "{private}"
        );
    }
}

#[test]
fn bad_key_configs_stop_the_node_with_go_texts() {
    let tmp = TempDir::new("signing-config");
    let dir = tmp.path.as_path();
    let data = format!("datadir={}", dir.join("data").display());
    let out = receptor(
        dir,
        &[
            "--node",
            "id=a",
            &data,
            "--local-only",
            "--work-signing",
            "privatekey=/nonexistent.key",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent.key does not exist"),
        "{}",
        show(&out)
    );
    let out = receptor(
        dir,
        &[
            "--node",
            "id=a",
            &data,
            "--local-only",
            "--work-command",
            "worktype=w",
            "command=cat",
            "verifysignature=true",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "VerifySignature for work command 'w' is true, but the work verification public key is not specified"
        ),
        "{}",
        show(&out)
    );
}
