//! The cert tools through the real binary: files and modes, what OpenSSL
//! reads in them, the signing prompt, and exchange with the Go reference
//! tool (target/reference/receptor-go) when it is there.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use std::sync::Arc;

use common::{CMD_TIMEOUT, RECEPTOR, TempDir, go_reference, output_with_input, show};
use receptor::certs::{pem, san};
use receptor::config::{TlsClientCfg, TlsServerCfg};
use receptor::tls::{ClientTls, ServerTls, error_text};
use rustls::Connection;

const NODE_OID: &str = "1.3.6.1.4.1.2312.19.1";

fn run_in(dir: &Path, program: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    output_with_input(cmd, input, CMD_TIMEOUT)
}

fn receptor(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    run_in(dir, RECEPTOR, args, input)
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", show(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, "openssl", args, None);
    assert!(
        out.status.success(),
        "openssl {args:?} (install with apt-get install -y openssl)\n{}",
        show(&out)
    );
    stdout(&out)
}

/// A CA in `dir`: ca.crt, ca.key.
fn init_ca(dir: &Path) {
    ok(receptor(
        dir,
        &[
            "--cert-init",
            "commonname=Test CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
        None,
    ));
}

/// A request for node `id` with a new key: `<id>.csr`, `<id>.key`.
fn make_req(dir: &Path, id: &str) {
    let (req, key, node) = (
        format!("outreq={id}.csr"),
        format!("outkey={id}.key"),
        format!("nodeid={id}"),
    );
    let dns = format!("dnsname={id}.example.com");
    ok(receptor(
        dir,
        &[
            "--cert-makereq",
            &format!("commonname={id}"),
            "bits=2048",
            &req,
            &key,
            &node,
            &dns,
            "ipaddress=127.0.0.1",
        ],
        None,
    ));
}

fn sign_args(id: &str) -> Vec<String> {
    [
        "--cert-signreq",
        &format!("req={id}.csr"),
        "cacert=ca.crt",
        "cakey=ca.key",
        &format!("outcert={id}.crt"),
    ]
    .map(String::from)
    .to_vec()
}

fn node_ids(path: &Path) -> Vec<String> {
    san::cert_node_ids(&pem::load_certificate(path).unwrap()).unwrap()
}

#[test]
fn init_makereq_signreq_files_openssl_reads() {
    let tmp = TempDir::new("certs");
    let dir = tmp.path.as_path();
    init_ca(dir);
    make_req(dir, "foo");
    let mut args = sign_args("foo");
    args.push("verify=true".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok(receptor(dir, &args, None));
    assert_eq!(stdout(&out), "", "verify=true prints nothing");
    for file in ["ca.crt", "ca.key", "foo.csr", "foo.key", "foo.crt"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert!(
        std::fs::read_to_string(dir.join("ca.key"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let ca = openssl(dir, &["x509", "-text", "-noout", "-in", "ca.crt"]);
    assert!(
        ca.contains("CA:TRUE") && ca.contains("Certificate Sign"),
        "{ca}"
    );
    assert!(
        ca.contains("TLS Web Client Authentication, TLS Web Server Authentication"),
        "{ca}"
    );
    let req = openssl(
        dir,
        &["req", "-text", "-noout", "-verify", "-in", "foo.csr"],
    );
    assert!(
        req.contains(&format!("othername: {NODE_OID}::foo")),
        "{req}"
    );
    assert!(
        req.contains("DNS:foo.example.com, IP Address:127.0.0.1"),
        "{req}"
    );
    let cert = openssl(dir, &["x509", "-text", "-noout", "-in", "foo.crt"]);
    assert!(
        cert.contains(&format!("othername: {NODE_OID}::foo")),
        "{cert}"
    );
    assert!(
        cert.contains("Issuer: CN = Test CA") && cert.contains("Subject: CN = foo"),
        "{cert}"
    );
    let verified = openssl(dir, &["verify", "-CAfile", "ca.crt", "foo.crt"]);
    assert_eq!(verified.trim(), "foo.crt: OK");
    assert_eq!(node_ids(&dir.join("foo.crt")), ["foo"]);
}

#[test]
fn makereq_errors_exit_1_with_gos_words() {
    let tmp = TempDir::new("certs-err");
    let dir = tmp.path.as_path();
    let out = receptor(
        dir,
        &["--cert-makereq", "commonname=x", "outreq=r.csr", "outkey=k"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "Error: must specify key bits when creating a new key\n"
    );
    let out = receptor(
        dir,
        &[
            "--cert-makereq",
            "commonname=x",
            "outreq=r.csr",
            "inkey=missing.key",
        ],
        None,
    );
    assert_eq!(
        stdout(&out),
        "Error: open missing.key: no such file or directory\n"
    );
    let out = receptor(
        dir,
        &[
            "--cert-init",
            "commonname=x",
            "bits=2048",
            "outcert=c",
            "outkey=k",
            "--node",
            "a",
        ],
        None,
    );
    assert_eq!(
        stdout(&out),
        "Error: cannot specify any other options with cert-init\n"
    );
}

fn prompt(dir: &Path, input: Option<&[u8]>) -> Output {
    let _ = std::fs::remove_file(dir.join("foo.crt"));
    let args = sign_args("foo");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    receptor(dir, &args, input)
}

const DESCRIPTION: &str = "Requested certificate:\n  Subject: CN=foo\n  Encryption Algorithm: RSA (2048 bits)\n  \
     Signature Algorithm: SHA256-RSA\n  Names:\n    DNS Name: foo.example.com\n    IP Address: 127.0.0.1\n    \
     Receptor Node ID: foo\nSign certificate (yes/no)? ";

#[test]
fn signreq_prompt_yes_no_and_closed_stdin() {
    let tmp = TempDir::new("certs-ask");
    let dir = tmp.path.as_path();
    init_ca(dir);
    make_req(dir, "foo");
    let out = ok(prompt(dir, Some(b"yes\n")));
    assert_eq!(stdout(&out), DESCRIPTION);
    assert_eq!(node_ids(&dir.join("foo.crt")), ["foo"]);
    let out = prompt(dir, Some(b"no\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), format!("{DESCRIPTION}Error: user declined\n"));
    assert!(!dir.join("foo.crt").exists());
    for closed in [None, Some(&b""[..])] {
        let out = prompt(dir, closed);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let text = stdout(&out);
        assert!(text.starts_with(DESCRIPTION), "{text}");
        assert!(
            text.contains("Error: no answer") && text.contains("verify=true"),
            "{text}"
        );
        assert!(!dir.join("foo.crt").exists());
    }
}

/// OpenSSL's spelling of the node-ID SAN (spec §5.1), read by our SAN
/// reader, and an OpenSSL request signed by our tool.
#[test]
fn openssl_made_node_id_is_read_and_signed() {
    let tmp = TempDir::new("certs-ossl");
    let dir = tmp.path.as_path();
    let san = format!("subjectAltName = otherName:{NODE_OID};UTF8:foo");
    let common = [
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "o.key",
        "-subj",
        "/CN=foo",
        "-addext",
        san.as_str(),
    ];
    let mut self_signed = vec!["req", "-x509", "-days", "1", "-out", "o.crt"];
    self_signed.extend(common);
    openssl(dir, &self_signed);
    assert_eq!(node_ids(&dir.join("o.crt")), ["foo"]);
    let mut request = vec!["req", "-new", "-out", "foo.csr"];
    request.extend(common);
    openssl(dir, &request);
    init_ca(dir);
    let mut args = sign_args("foo");
    args.push("verify=true".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(receptor(dir, &args, None));
    assert_eq!(node_ids(&dir.join("foo.crt")), ["foo"]);
}

/// Go signs our request with our CA, and we sign Go's request with Go's
/// CA; each certificate carries its node ID and verifies with OpenSSL.
/// Both tools describe the same request in the same words.
#[test]
fn exchange_with_the_go_tool() {
    let Some(go) = go_reference() else { return };
    let go = go.to_str().unwrap();
    let tmp = TempDir::new("certs-go");
    let (ours, theirs) = (tmp.path.join("rs"), tmp.path.join("go"));
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(&theirs).unwrap();
    init_ca(&ours);
    make_req(&ours, "foo");
    let go_answer = run_in(
        &ours,
        go,
        &sign_args("foo")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        Some(b"no\n"),
    );
    assert_eq!(
        stdout(&go_answer),
        format!("{DESCRIPTION}Error: user declined\n")
    );
    let mut args = sign_args("foo");
    args.push("verify=true".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(run_in(&ours, go, &args, None));
    assert_eq!(node_ids(&ours.join("foo.crt")), ["foo"]);
    assert_eq!(
        openssl(&ours, &["verify", "-CAfile", "ca.crt", "foo.crt"]).trim(),
        "foo.crt: OK"
    );

    ok(run_in(
        &theirs,
        go,
        &[
            "--cert-init",
            "commonname=Go CA",
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ],
        None,
    ));
    ok(run_in(
        &theirs,
        go,
        &[
            "--cert-makereq",
            "commonname=bar",
            "bits=2048",
            "outreq=bar.csr",
            "outkey=bar.key",
            "nodeid=bar",
            "nodeid=baz",
        ],
        None,
    ));
    let mut args = sign_args("bar");
    args.push("verify=true".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(receptor(&theirs, &args, None));
    assert_eq!(node_ids(&theirs.join("bar.crt")), ["bar", "baz"]);
    assert_eq!(
        openssl(&theirs, &["verify", "-CAfile", "ca.crt", "bar.crt"]).trim(),
        "bar.crt: OK"
    );

    // Our TLS code with certificates either tool made: Go-signed for our
    // CA and key, ours-signed for Go's CA and key, then Go-signed for Go's.
    assert_eq!(mesh_handshake(&ours, "foo", "foo"), Ok(()));
    assert_eq!(mesh_handshake(&theirs, "bar", "baz"), Ok(()));
    assert_eq!(
        mesh_handshake(&theirs, "bar", "qux"),
        Err("x509: certificate is valid for Receptor node IDs bar, baz, not qux".to_string())
    );
    ok(run_in(&theirs, go, &args, None));
    assert_eq!(mesh_handshake(&theirs, "bar", "bar"), Ok(()));
}

/// An in-memory TLS handshake: a server for node `id` showing
/// `<id>.crt`/`<id>.key` from `dir`, and a client trusting `dir`'s CA and
/// dialing node `target`. The client's error text on failure.
fn mesh_handshake(dir: &Path, id: &str, target: &str) -> Result<(), String> {
    let server = TlsServerCfg {
        name: "srv".into(),
        cert: dir.join(format!("{id}.crt")),
        key: dir.join(format!("{id}.key")),
        require_client_cert: false,
        client_cas: None,
        pinned_client_cert: vec![],
        skip_receptor_names_check: false,
        min_tls13: false,
    };
    let client = TlsClientCfg {
        name: "cli".into(),
        cert: None,
        key: None,
        root_cas: Some(dir.join("ca.crt")),
        insecure_skip_verify: false,
        pinned_server_cert: vec![],
        skip_receptor_names_check: false,
        min_tls13: false,
    };
    let server = ServerTls::load(&server, id).unwrap().config().unwrap();
    let (client, name) = ClientTls::load(&client, id)
        .unwrap()
        .for_node(target)
        .unwrap();
    let mut c = Connection::Client(rustls::ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = Connection::Server(rustls::ServerConnection::new(Arc::new(server)).unwrap());
    while c.is_handshaking() || s.is_handshaking() {
        if let Err(e) = pump(&mut c, &mut s) {
            panic!("server failed: {e}");
        }
        pump(&mut s, &mut c).map_err(|e| error_text(&e))?;
    }
    Ok(())
}

fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    // Reading zero bytes would tell rustls the peer closed.
    if buf.is_empty() {
        return Ok(());
    }
    to.read_tls(&mut &buf[..]).unwrap();
    to.process_new_packets().map(|_| ())
}
