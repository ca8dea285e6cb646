//! Work signing between the Go reference daemon and ours, both ways: a Go
//! controller signs for our executor, and we sign for a Go executor, so
//! each side's tokens are checked by the other side's code. The same bad
//! tokens sent to the Go executor get the replies our executor gives.
//! Skipped (with a printed line) when target/reference/receptor-go is
//! absent (tests/run.sh unpacks it from ../shared/reference when present).

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::SystemTime;

use common::{
    CMD_TIMEOUT, Conn, Node, TempDir, free_port, go_reference, output_with_input, receptorctl,
    secs, show, text, unit_id, verifying_echo, wait_until,
};
use receptor::work::signing::sign_token;
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::rand_core::OsRng;
use serde_json::Value;

/// `signing.key` as Go's own tools write it (PKCS#1), `signing.pub` (PKIX).
fn write_keys(dir: &Path) -> RsaPrivateKey {
    let key = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let private = key.to_pkcs1_pem(LineEnding::LF).unwrap();
    std::fs::write(dir.join("signing.key"), private.as_bytes()).unwrap();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("signing.pub"), public).unwrap();
    key
}

/// The Go node `gonode`, with a control socket `go.sock` in `dir`; killed
/// on drop.
struct GoNode {
    child: Child,
    dir: PathBuf,
}

impl GoNode {
    fn start(go: &Path, dir: &Path, args: &[String]) -> GoNode {
        let log = std::fs::File::create(dir.join("go.log")).unwrap();
        let child = Command::new(go)
            .args([
                "--node".into(),
                "id=gonode".into(),
                format!("datadir={}", dir.join("godata").display()),
                "--log-level".into(),
                "debug".into(),
            ])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = GoNode {
            child,
            dir: dir.to_path_buf(),
        };
        let ready = wait_until(secs(20), || UnixStream::connect(node.socket()).is_ok());
        assert!(ready, "the Go node did not start:\n{}", node.log());
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("go.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("go.log")).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(receptorctl());
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd.env_remove("RECEPTORCTL_SOCKET");
        output_with_input(cmd, None, CMD_TIMEOUT)
    }

    fn cmd(&self, line: &str) -> String {
        Conn::open(&self.socket()).0.cmd(line)
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_args(tcp_port: Option<u16>) -> Vec<String> {
    let mut args = vec![
        "--control-service".to_string(),
        "service=control".into(),
        "filename=go.sock".into(),
    ];
    if let Some(p) = tcp_port {
        args.push(format!("tcplisten=127.0.0.1:{p}"));
    }
    args
}

/// Polls `status` (a `work status` reply line) until State is `state`.
fn wait_state(
    what: &str,
    state: i64,
    mut status: impl FnMut() -> String,
    log: impl Fn() -> String,
) {
    let mut last = String::new();
    let ok = wait_until(secs(60), || {
        last = status();
        serde_json::from_str::<Value>(&last).is_ok_and(|v| v["State"] == state)
    });
    assert!(ok, "{what} never reached state {state}: {last}\n{}", log());
}

#[test]
fn a_go_controller_signs_for_our_executor() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("sign-go-rs");
    let dir = tmp.path.as_path();
    write_keys(dir);
    let mesh = free_port();
    let mut args = control_args(None);
    args.extend([
        "--tcp-listener".into(),
        format!("port={mesh}"),
        "--work-signing".into(),
        format!("privatekey={}", dir.join("signing.key").display()),
        "tokenexpiration=5m".into(),
    ]);
    let gonode = GoNode::start(&go, dir, &args);
    let rs = Node::start(
        "rs",
        &[
            vec![common::peer(mesh, 1.0)],
            verifying_echo(&dir.join("signing.pub")).into(),
        ]
        .concat(),
    );
    assert!(
        wait_until(secs(30), || rs.route("gonode").is_some()),
        "no route to gonode: {}\n{}",
        rs.log_tail(20),
        gonode.log()
    );

    let out = gonode.ctl(&[
        "work",
        "submit",
        "echo",
        "--node",
        "rs",
        "--signwork",
        "-l",
        "signed by go",
    ]);
    assert!(out.status.success(), "{}\n{}", show(&out), rs.log_tail(20));
    let id = unit_id(&out);
    wait_state(
        "the Go controller's unit",
        2,
        || gonode.cmd(&format!("work status {id}")),
        || format!("{}\n{}", gonode.log(), rs.log_tail(30)),
    );
    let out = gonode.ctl(&["work", "results", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "signed by go\n",
        "{}",
        show(&out)
    );
    // Go's signed release reaches us and is accepted.
    let out = gonode.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(secs(30), || rs.connect().cmd("work list") == "{}"),
        "our unit was not released: {}\n{}",
        rs.log_tail(20),
        gonode.log()
    );

    // Unsigned from Go: our refusal is what Go reports.
    let out = gonode.ctl(&["work", "submit", "echo", "--node", "rs", "-l", "x"]);
    assert!(
        text(&out).contains("could not verify signature: signature is empty"),
        "{}",
        show(&out)
    );
}

/// The reply line to a local submit of `work_type` on TCP control `port`.
fn submit_tcp(port: u16, work_type: &str, signature: Option<&str>) -> String {
    let mut req = serde_json::json!({
        "command": "work", "subcommand": "submit", "node": "localhost", "worktype": work_type,
    });
    if let Some(sig) = signature {
        req["signature"] = sig.into();
    }
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(secs(20))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    writer.write_all(format!("{req}\n").as_bytes()).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    if line.starts_with("Work unit created") {
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut result = String::new();
        reader.read_line(&mut result).unwrap();
    }
    line.trim_end().to_string()
}

#[test]
fn we_sign_for_a_go_executor() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("sign-rs-go");
    let dir = tmp.path.as_path();
    let key = write_keys(dir);
    let (mesh, go_ctl) = (free_port(), free_port());
    let mut args = control_args(Some(go_ctl));
    args.extend([
        "--tcp-listener".into(),
        format!("port={mesh}"),
        "--work-verification".into(),
        format!("publickey={}", dir.join("signing.pub").display()),
        "--work-command".into(),
        "worktype=echo".into(),
        "command=cat".into(),
        "verifysignature=true".into(),
        "--work-command".into(),
        "worktype=plain".into(),
        "command=cat".into(),
    ]);
    let gonode = GoNode::start(&go, dir, &args);
    // No tokenexpiration: Go would crash here; we use 5 minutes.
    let rs = Node::start(
        "rs",
        &[
            common::peer(mesh, 1.0),
            format!(
                "- work-signing:\n    privatekey: {:?}",
                dir.join("signing.key")
            ),
        ],
    );
    assert!(
        wait_until(secs(30), || rs.route("gonode").is_some()),
        "no route to gonode: {}\n{}",
        rs.log_tail(20),
        gonode.log()
    );

    let out = rs.ctl(&[
        "work",
        "submit",
        "echo",
        "--node",
        "gonode",
        "--signwork",
        "-l",
        "signed by rust",
    ]);
    assert!(out.status.success(), "{}\n{}", show(&out), gonode.log());
    let id = unit_id(&out);
    wait_state(
        "our controller's unit",
        2,
        || rs.connect().cmd(&format!("work status {id}")),
        || format!("{}\n{}", rs.log_tail(30), gonode.log()),
    );
    let out = rs.ctl(&["work", "results", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "signed by rust\n",
        "{}",
        show(&out)
    );
    let out = rs.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(secs(30), || gonode.cmd("work list") == "{}"),
        "the Go unit was not released: {}\n{}",
        gonode.cmd("work list"),
        gonode.log()
    );

    // The texts our executor gives (tests/signing.rs) are Go's.
    let now = SystemTime::now();
    let valid = sign_token(&key, "gonode", now + secs(60)).unwrap();
    assert!(submit_tcp(go_ctl, "echo", Some(&valid)).starts_with("Work unit created with ID "));
    let stranger = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let bad_sig = "ERROR: could not verify signature: crypto/rsa: verification error";
    let foreign = sign_token(&stranger, "gonode", now + secs(60)).unwrap();
    assert_eq!(submit_tcp(go_ctl, "echo", Some(&foreign)), bad_sig);
    let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
    let later = sign_token(&key, "gonode", now + secs(3600)).unwrap();
    parts[1] = later.split('.').nth(1).unwrap().to_string();
    assert_eq!(submit_tcp(go_ctl, "echo", Some(&parts.join("."))), bad_sig);
    let elsewhere = sign_token(&key, "rs", now + secs(60)).unwrap();
    assert_eq!(
        submit_tcp(go_ctl, "echo", Some(&elsewhere)),
        "ERROR: token audience did not match node ID"
    );
    let expired = sign_token(&key, "gonode", now - secs(30)).unwrap();
    let reply = submit_tcp(go_ctl, "echo", Some(&expired));
    assert!(
        reply.starts_with("ERROR: could not verify signature: token is expired by 3"),
        "{reply}"
    );
    assert_eq!(
        submit_tcp(go_ctl, "echo", None),
        "ERROR: could not verify signature: signature is empty"
    );
    assert_eq!(
        submit_tcp(go_ctl, "echo", Some("a.b")),
        "ERROR: could not verify signature: token contains an invalid number of segments"
    );
    assert_eq!(
        submit_tcp(go_ctl, "plain", Some(&valid)),
        "ERROR: work type did not expect a signature"
    );
}

/// The token a Go controller sends, caught by standing in for the
/// executor: a node `exec` whose mesh service `control` is a tcp-client
/// proxy to a socket of this test. Ours, made with the same key for the
/// same node and second, must be the very same string.
#[test]
fn go_tokens_are_byte_for_byte_ours() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("sign-go-bytes");
    let dir = tmp.path.as_path();
    let key = write_keys(dir);
    let mesh = free_port();
    let mut args = control_args(None);
    args.extend([
        "--tcp-listener".into(),
        format!("port={mesh}"),
        "--work-signing".into(),
        format!("privatekey={}", dir.join("signing.key").display()),
        "tokenexpiration=7m".into(),
    ]);
    let gonode = GoNode::start(&go, dir, &args);
    let catcher = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = catcher.local_addr().unwrap().port();
    let config = dir.join("exec.yaml");
    std::fs::write(
        &config,
        format!(
            "- node:\n    id: exec\n    datadir: {:?}\n\
             - tcp-peer:\n    address: 127.0.0.1:{mesh}\n\
             - tcp-client:\n    service: control\n    address: 127.0.0.1:{port}\n",
            dir.join("execdata")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("exec.log")).unwrap();
    let mut exec = Command::new(common::RECEPTOR)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = gonode.ctl(&[
        "work",
        "submit",
        "echo",
        "--node",
        "exec",
        "--signwork",
        "--no-payload",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // A connection that ends before its request (the mesh stream closed
    // and dialled again) is skipped: the token comes on the next one.
    let mut line = String::new();
    for _ in 0..5 {
        let (stream, _) = catcher.accept().unwrap();
        stream.set_read_timeout(Some(secs(20))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer.write_all(b"Receptor Control, node exec\n").unwrap();
        BufReader::new(stream).read_line(&mut line).unwrap();
        if !line.is_empty() {
            break;
        }
    }
    let _ = exec.kill();
    let _ = exec.wait();
    let req: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(req["subcommand"], "submit", "{req}");
    let token = req["signature"].as_str().unwrap_or_else(|| panic!("{req}"));
    let claims = token.split('.').nth(1).unwrap();
    let exp = (0..=5)
        .map(|late| {
            let t = SystemTime::now() + secs(7 * 60) - secs(late);
            sign_token(&key, "exec", t).unwrap()
        })
        .find(|ours| ours.split('.').nth(1) == Some(claims));
    assert_eq!(exp.as_deref(), Some(token), "Go's token {token}");
}
