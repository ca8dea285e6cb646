//! work-kubernetes end to end: the real receptor and receptorctl against a
//! fake API server (tests/kube_fake) whose pods are local processes.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "kube_fake/mod.rs"]
mod fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pki::Pki;
use common::{Node, TempDir, secs, show, wait_until};
use fake::{FakeKube, Options};
use serde_json::Value;

struct Cluster {
    tmp: TempDir,
    pki: Pki,
    kube: FakeKube,
}

impl Cluster {
    fn new(tag: &str, opts: Options) -> Cluster {
        let tmp = TempDir::new(tag);
        let pki = Pki::new(&tmp.path.join("pki"), "Fake Kube CA");
        let server = pki.issue("apiserver", &[], &[]);
        let kube = FakeKube::start(&tmp.path, &pki.ca(), &server.cert, &server.key, opts);
        Cluster { tmp, pki, kube }
    }

    /// A kubeconfig file; `user` is the YAML of the user entry.
    fn kubeconfig(&self, file: &str, user: &str, ns: &str) -> PathBuf {
        self.kubeconfig_at(&self.kube.url(), file, user, ns)
    }

    fn kubeconfig_at(&self, server: &str, file: &str, user: &str, ns: &str) -> PathBuf {
        let ca = std::fs::read(self.pki.ca()).unwrap();
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             contexts:\n- name: test\n  context: {{cluster: fake, user: u, namespace: {ns}}}\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: u\n  user:\n{user}\n",
            server,
            fake::base64(&ca)
        );
        let path = self.tmp.path.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A node with one work-kubernetes type, authenticated by the good
    /// token; `keys` are the type's other YAML keys.
    fn node_with(&self, worktype: &str, keys: &str) -> Node {
        let kc = self.token_config("good-token");
        start_node(&[kube_type(worktype, &kc, keys)])
    }

    fn token_config(&self, token: &str) -> PathBuf {
        self.kubeconfig(
            &format!("kc-{token}"),
            &format!("    token: {token}"),
            "testns",
        )
    }
}

/// The YAML keys of a pod that echoes its stdin.
const CAT: &str = "    image: busybox\n    command: cat\n";
/// The YAML keys of a pod running the `sh` script given as runtime params.
const SH: &str = "    image: busybox\n    command: sh\n    allowruntimeparams: true\n";

/// YAML item: a work-kubernetes type with the kubeconfig auth.
fn kube_type(worktype: &str, kubeconfig: &Path, keys: &str) -> String {
    format!(
        "- work-kubernetes:\n    worktype: {worktype}\n    authmethod: kubeconfig\n    \
         kubeconfig: {}\n{keys}",
        kubeconfig.display()
    )
}

fn start_node(items: &[String]) -> Node {
    let mut all = vec!["- local-only".to_string()];
    all.extend_from_slice(items);
    Node::start("kexec", &all)
}

fn ok_stdout(out: &std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", show(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Submits with receptorctl; the unit ID.
fn submit(node: &Node, args: &[&str], input: &[u8]) -> String {
    let mut full = vec!["work", "submit"];
    full.extend_from_slice(args);
    let out = node.ctl_with_input(&full, input);
    ok_stdout(&out, "submit");
    common::unit_id(&out)
}

fn status(node: &Node, id: &str) -> Value {
    let (mut conn, _) = common::Conn::open(&node.socket);
    let line = conn.cmd(&format!("work status {id}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("status {line:?}: {e}"))
}

fn wait_final(node: &Node, id: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let done = wait_until(timeout, || {
        last = status(node, id);
        matches!(last["State"].as_i64(), Some(2..=4))
    });
    assert!(done, "unit {id} not final: {last}\n{}", node.log_tail(40));
    last
}

fn results(node: &Node, id: &str) -> Vec<u8> {
    // receptorctl exits 1 after the output of a failed unit.
    node.ctl(&["work", "results", id]).stdout
}

/// Submit, wait, and fetch: (final status, stdout).
fn run(node: &Node, args: &[&str], input: &[u8]) -> (Value, Vec<u8>, String) {
    let id = submit(node, args, input);
    let st = wait_final(node, &id, secs(60));
    (st, results(node, &id), id)
}

fn assert_succeeded(st: &Value, node: &Node) {
    assert_eq!(st["State"], 2, "{st}\n{}", node.log_tail(30));
}

#[test]
fn echo_reply_with_a_token_payload_from_file_stdin_and_literal() {
    let c = Cluster::new("k-echo", Options::default());
    let node = c.node_with("echo-reply", CAT);
    let payload = c.tmp.path.join("payload.txt");
    std::fs::write(&payload, "from a file\n").unwrap();
    let (st, out, id) = run(
        &node,
        &["echo-reply", "--payload", payload.to_str().unwrap()],
        b"",
    );
    assert_succeeded(&st, &node);
    assert_eq!(out, b"from a file\n");
    assert_eq!(st["Detail"], "Finished");
    let x = &st["ExtraData"];
    assert_eq!(x["Image"], "busybox");
    assert_eq!(x["Command"], "cat");
    assert_eq!(x["KubeNamespace"], "testns");
    assert_eq!(x["KubeConfig"], "");
    let pod = x["PodName"].as_str().unwrap().to_string();
    assert!(pod.starts_with("echo-reply-"), "{pod}");
    // The pod is gone once the unit ended; it was the default shape.
    assert!(wait_until(secs(5), || c
        .kube
        .record()
        .deleted
        .contains(&pod)));
    {
        let rec = c.kube.record();
        let body = &rec.created[0];
        assert_eq!(body["metadata"]["generateName"], "echo-reply-");
        assert_eq!(body["spec"]["restartPolicy"], "Never");
        let w = &body["spec"]["containers"][0];
        assert_eq!(
            (
                w["name"].as_str(),
                w["stdin"].as_bool(),
                w["stdinOnce"].as_bool()
            ),
            (Some("worker"), Some(true), Some(true))
        );
        assert_eq!(rec.attach_protocols, ["v5.channel.k8s.io"]);
    }
    assert!(
        node.log().contains("v5.channel.k8s.io"),
        "the log says which protocol"
    );
    // The kubeconfig's contents are in no file of the unit.
    let unit_dir = node.dir().join("data/kexec").join(&id);
    let status_file = std::fs::read_to_string(unit_dir.join("status")).unwrap();
    assert!(
        !status_file.contains("good-token") && !status_file.contains("BEGIN"),
        "{status_file}"
    );

    let (st, out, _) = run(&node, &["echo-reply", "--payload", "-"], b"from stdin\n");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"from stdin\n");
    let (st, out, _) = run(&node, &["echo-reply", "-l", "literal"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"literal\n", "receptorctl adds the newline");
}

#[test]
fn v4_attach_fallback_and_no_payload_means_no_attach() {
    let c = Cluster::new(
        "k-v4",
        Options {
            v5: false,
            ..Options::default()
        },
    );
    let kc = c.token_config("good-token");
    let node = start_node(&[
        kube_type("echo", &kc, CAT),
        kube_type(
            "hello",
            &kc,
            "    image: busybox\n    command: echo\n    params: hi\n",
        ),
    ]);
    let (st, out, _) = run(&node, &["echo", "-l", "over v4"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"over v4\n");
    assert_eq!(c.kube.record().attach_protocols, ["v4.channel.k8s.io"]);
    let (st, out, _) = run(&node, &["hello", "--no-payload"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"hi\n");
    assert_eq!(
        c.kube.record().attach_protocols.len(),
        1,
        "no payload, no attach"
    );
}

#[test]
fn bad_token_fails_with_the_servers_401_message() {
    let c = Cluster::new(
        "k-401",
        Options {
            forbidden: vec!["limited".into()],
            ..Options::default()
        },
    );
    let bad = c.token_config("wrong-token");
    let limited = c.token_config("limited");
    let node = start_node(&[
        kube_type("bad", &bad, CAT),
        kube_type("limited", &limited, CAT),
    ]);
    let (st, _, _) = run(&node, &["bad", "-l", "x"], b"");
    assert_eq!(st["State"], 3, "{st}");
    assert_eq!(st["Detail"], "Error creating pod: Unauthorized", "{st}");
    let (st, _, _) = run(&node, &["limited", "-l", "x"], b"");
    assert_eq!(st["State"], 3, "{st}");
    let d = st["Detail"].as_str().unwrap();
    assert!(
        d.starts_with("Error creating pod: pods is forbidden"),
        "{d}"
    );
    assert!(c.kube.pod_names().is_empty());
}

#[test]
fn client_certificate_kubeconfig() {
    let c = Cluster::new("k-cert", Options::default());
    let user = c.pki.issue("kubeuser", &[], &[]);
    // Also: a server URL with a path prefix.
    let kc = c.kubeconfig_at(
        &format!("{}/prefix", c.kube.url()),
        "kc-cert",
        &format!(
            "    client-certificate: {}\n    client-key: {}",
            user.cert.display(),
            user.key.display()
        ),
        "certns",
    );
    let node = start_node(&[kube_type("echo", &kc, CAT)]);
    let (st, out, _) = run(&node, &["echo", "-l", "with a cert"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"with a cert\n");
    let requests = c.kube.record().requests.clone();
    assert!(
        requests.iter().all(|r| r.contains(" /prefix/")),
        "{requests:?}"
    );
    assert_eq!(st["ExtraData"]["KubeNamespace"], "certns");
}

#[test]
fn in_cluster_service_account() {
    let c = Cluster::new("k-incl", Options::default());
    let sa = c.tmp.path.join("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "good-token\n").unwrap();
    std::fs::copy(c.pki.ca(), sa.join("ca.crt")).unwrap();
    std::fs::write(sa.join("namespace"), "incl\n").unwrap();
    let port = c.kube.port.to_string();
    let node = Node::start_env(
        "kexec",
        &["- local-only\n- work-kubernetes:\n    worktype: echo\n    namespace: podns\n    image: busybox\n    command: cat".to_string()],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("RECEPTOR_KUBE_SERVICE_ACCOUNT_DIR", sa.to_str().unwrap()),
        ],
    );
    let (st, out, _) = run(&node, &["echo", "-l", "in cluster"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"in cluster\n");
    assert_eq!(st["ExtraData"]["KubeNamespace"], "podns");
    // A rotated token is read again.
    std::fs::write(sa.join("token"), "rotated-out").unwrap();
    let (st, _, _) = run(&node, &["echo", "-l", "x"], b"");
    assert_eq!(st["Detail"], "Error creating pod: Unauthorized");
}

#[test]
fn runtime_params_allowed_and_refused() {
    let c = Cluster::new("k-params", Options::default());
    let kc = c.token_config("good-token");
    let dir = c.tmp.path.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), "A\n").unwrap();
    std::fs::write(dir.join("b"), "B\n").unwrap();
    let node = start_node(&[
        kube_type(
            "cat-files",
            &kc,
            "    image: busybox\n    command: cat\n    allowruntimeparams: true\n",
        ),
        kube_type("fixed", &kc, CAT),
        kube_type(
            "anyimage",
            &kc,
            "    image: busybox\n    command: cat\n    allowruntimecommand: true\n",
        ),
    ]);
    let files = format!(
        "kube_params={} {}",
        dir.join("a").display(),
        dir.join("b").display()
    );
    let (st, out, _) = run(
        &node,
        &["cat-files", "--no-payload", "--param", &files],
        b"",
    );
    assert_succeeded(&st, &node);
    assert_eq!(out, b"A\nB\n");
    let out = node.ctl(&[
        "work",
        "submit",
        "fixed",
        "--no-payload",
        "--param",
        "kube_image=other",
    ]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains("kube_image provided but not allowed"),
        "{}",
        show(&out)
    );
    let (st, out, _) = run(
        &node,
        &["anyimage", "-l", "img", "--param", "kube_image=alpine:3"],
        b"",
    );
    assert_succeeded(&st, &node);
    assert_eq!(out, b"img\n");
    assert_eq!(st["ExtraData"]["Image"], "alpine:3");
    let created = c.kube.record().created.clone();
    assert_eq!(
        created.last().unwrap()["spec"]["containers"][0]["image"],
        "alpine:3"
    );
}

const USER_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: mypod
  labels: {team: blue, app: receptor}
spec:
  initContainers:
  - name: init
    image: busybox
    command: [true]
  containers:
  - name: worker
    image: busybox
    command: [cat]
    resources:
      limits: {cpu: 500m, memory: 64Mi}
";

#[test]
fn predefined_and_runtime_pods_reach_the_server_unchanged() {
    let c = Cluster::new("k-pod", Options::default());
    let kc = c.token_config("good-token");
    let pod_file = c.tmp.path.join("pod.yml");
    std::fs::write(&pod_file, USER_POD).unwrap();
    let node = start_node(&[
        kube_type(
            "fixedpod",
            &kc,
            &format!("    pod: {}\n", pod_file.display()),
        ),
        kube_type("anypod", &kc, "    allowruntimepod: true\n"),
    ]);
    let (st, out, _) = run(&node, &["fixedpod", "-l", "predefined"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"predefined\n");
    let json_pod = serde_json::to_string(
        &serde_yaml::from_str::<Value>(&USER_POD.replace("mypod", "jsonpod")).unwrap(),
    )
    .unwrap();
    let json_file = c.tmp.path.join("pod.json");
    std::fs::write(&json_file, json_pod).unwrap();
    let param = format!("secret_kube_pod=@{}", json_file.display());
    let (st, out, id) = run(&node, &["anypod", "-l", "runtime", "--param", &param], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"runtime\n");
    assert!(
        st["ExtraData"]["PodName"]
            .as_str()
            .unwrap()
            .starts_with("jsonpod-")
    );
    assert_eq!(st["ExtraData"]["KubePod"], "");
    let status_file =
        std::fs::read_to_string(node.dir().join("data/kexec").join(&id).join("status")).unwrap();
    assert!(!status_file.contains("initContainers"), "{status_file}");
    for body in &c.kube.record().created {
        assert_eq!(body["metadata"]["labels"]["team"], "blue");
        assert_eq!(body["spec"]["initContainers"][0]["name"], "init");
        assert_eq!(
            body["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "64Mi"
        );
        assert_eq!(body["spec"]["restartPolicy"], "Never");
    }
}

#[test]
fn cut_log_streams_resume_byte_exact() {
    let c = Cluster::new(
        "k-cut",
        Options {
            cut_after: Some(20_000),
            cut_streams: 5,
            ..Options::default()
        },
    );
    let node = c.node_with("gen", SH);
    // Bursts of short lines: each burst shares a millisecond timestamp.
    // sinceTime has seconds precision, so a resumed stream repeats up to a
    // second of output; a cut must come later than that (5555 bytes is
    // more than the ~15.6 kB a second this streams, timestamps included) or no stream could ever
    // get past it (Go's reader cannot either).
    let script = "kube_params=-c 'i=0; while [ $i -lt 1500 ]; do echo line-$i; i=$((i+1)); \
                  [ $((i % 100)) -eq 0 ] && sleep 0.25; done; printf tail'";
    let (st, out, _) = run(&node, &["gen", "--no-payload", "--param", script], b"");
    assert_succeeded(&st, &node);
    let mut want = String::new();
    for i in 0..1500 {
        want.push_str(&format!("line-{i}\n"));
    }
    want.push_str("tail");
    assert_eq!(String::from_utf8_lossy(&out), want);
    let streams = c.kube.record().log_streams;
    assert!(
        streams >= 4,
        "the stream was cut and resumed: {streams} streams"
    );
}

#[test]
fn twenty_mib_log_and_non_zero_exit() {
    let c = Cluster::new("k-big", Options::default());
    let node = c.node_with("sh", SH);
    let started = std::time::Instant::now();
    let (st, out, _) = run(
        &node,
        &[
            "sh",
            "--no-payload",
            "--param",
            "kube_params=-c 'yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c 20971520'",
        ],
        b"",
    );
    assert_succeeded(&st, &node);
    assert_eq!(out.len(), 20 * 1024 * 1024);
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    assert!(
        out.chunks(line.len()).all(|c| line.starts_with(c)),
        "content differs"
    );
    assert_eq!(st["StdoutSize"], 20 * 1024 * 1024);
    eprintln!(
        "20 MiB log: {:.1} MB/s",
        20.97 / started.elapsed().as_secs_f64()
    );

    let (st, out, _) = run(
        &node,
        &[
            "sh",
            "--no-payload",
            "--param",
            "kube_params=-c 'echo bye; exit 3'",
        ],
        b"",
    );
    assert_eq!(st["State"], 3, "{st}");
    assert_eq!(
        st["Detail"],
        "container failed with exit code 3: worker failed"
    );
    assert_eq!(out, b"bye\n");
}

#[test]
fn image_pull_back_off_fails_with_the_reason() {
    let c = Cluster::new("k-pull", Options::default());
    let node = c.node_with(
        "pull",
        "    image: registry.example/pullbackoff:1\n    command: cat\n",
    );
    let (st, _, _) = run(&node, &["pull", "-l", "x"], b"");
    assert_eq!(st["State"], 3, "{st}");
    assert_eq!(
        st["Detail"],
        "Error creating pod: container failed to start, ImagePullBackOff"
    );
    assert!(c.kube.pod_names().is_empty(), "the pod was deleted");
}

#[test]
fn cancel_deletes_the_pod() {
    let c = Cluster::new("k-cancel", Options::default());
    let node = c.node_with(
        "sleep",
        "    image: busybox\n    command: sleep\n    params: '600'\n",
    );
    let id = submit(&node, &["sleep", "--no-payload"], b"");
    assert!(
        wait_until(secs(20), || status(&node, &id)["Detail"] == "Pod Running"),
        "{}",
        status(&node, &id)
    );
    let pod = status(&node, &id)["ExtraData"]["PodName"]
        .as_str()
        .unwrap()
        .to_string();
    let out = node.ctl(&["work", "cancel", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(status(&node, &id)["State"], 4);
    assert!(c.kube.record().deleted.contains(&pod));
    assert!(c.kube.pod_names().is_empty());
    // Still Canceled once the unit's thread has seen the end.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&node, &id)["State"], 4);
    let out = node.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn executor_restarted_mid_pod_completes_the_unit() {
    let c = Cluster::new("k-restart", Options::default());
    let kc = c.token_config("good-token");
    let node_items = [kube_type("slow", &kc, SH)];
    let mut node = start_node(&node_items);
    let id = submit(
        &node,
        &[
            "slow",
            "--no-payload",
            "--param",
            "kube_params=-c 'echo before; sleep 3; echo after'",
        ],
        b"",
    );
    assert!(
        wait_until(secs(20), || status(&node, &id)["StdoutSize"] == 7),
        "{}",
        status(&node, &id)
    );
    node.kill();
    node.restart();
    let st = wait_final(&node, &id, secs(30));
    assert_succeeded(&st, &node);
    assert_eq!(results(&node, &id), b"before\nafter\n");
}

#[test]
fn legacy_log_mode_for_old_servers() {
    let c = Cluster::new(
        "k-legacy",
        Options {
            git_version: "v1.22.5".into(),
            ..Options::default()
        },
    );
    let node = c.node_with("echo", CAT);
    let (st, out, _) = run(&node, &["echo", "-l", "old\nserver"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"old\nserver\n");
    assert!(node.log().contains("legacy mode"));
}

#[test]
fn startup_errors() {
    let c = Cluster::new("k-start", Options::default());
    let _ = &c;
    let out = std::process::Command::new(common::RECEPTOR)
        .args([
            "--node",
            "id=x",
            "--local-only",
            "--work-kubernetes",
            "worktype=k",
            "authmethod=nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid AuthMethod: nope")
            || String::from_utf8_lossy(&out.stdout).contains("invalid AuthMethod: nope"),
        "{}",
        show(&out)
    );
}

#[test]
fn runtime_kubeconfig_over_a_tls_remote_submit() {
    let c = Cluster::new("k-remote", Options::default());
    let kc = c.token_config("good-token");
    let kc_text = std::fs::read_to_string(&kc).unwrap();
    let ca = c.pki.ca();
    let port = common::free_port();
    let tls = |id: &str| {
        let cert = c.pki.node(id);
        [cert.server("srv", &ca), cert.client("cli", &ca, "")]
    };
    let mut items = tls("executor").to_vec();
    items.push(common::pki::tls_listener(port, "srv"));
    items.push(
        "- work-kubernetes:\n    worktype: runtime-echo\n    authmethod: runtime\n    \
         allowruntimeauth: true\n    image: busybox\n    command: cat"
            .to_string(),
    );
    let executor = Node::start_full("executor", "", "    tls: srv", &items);
    let mut items = tls("controller").to_vec();
    items.push(common::pki::tls_peer(port, "cli"));
    let controller = Node::start("controller", &items);
    assert!(wait_until(secs(15), || controller
        .route("executor")
        .is_some()));
    let kc_file = c.tmp.path.join("runtime-kc");
    std::fs::write(&kc_file, &kc_text).unwrap();
    let param = format!("secret_kube_config=@{}", kc_file.display());
    let out = controller.ctl_with_input(
        &[
            "work",
            "submit",
            "runtime-echo",
            "--node",
            "executor",
            "--tls-client",
            "cli",
            "--param",
            &param,
            "-f",
            "-p",
            "-",
        ],
        b"remote kube\n",
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        show(&out),
        executor.log_tail(30)
    );
    assert!(out.stdout.starts_with(b"remote kube\n"), "{}", show(&out));
    // The token reached no file and no reply on either node.
    for node in [&controller, &executor] {
        let list = node.ctl(&["work", "list"]);
        assert!(!String::from_utf8_lossy(&list.stdout).contains("good-token"));
        for entry in walk(&node.dir().join("data")) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !bytes.windows(10).any(|w| w == b"good-token"),
                "token in {}",
                entry.display()
            );
        }
    }
    // A param the executor's work type does not allow is refused there.
    let out = controller.ctl(&[
        "work",
        "submit",
        "runtime-echo",
        "--node",
        "executor",
        "--no-payload",
        "--param",
        "kube_image=x",
        "--param",
        &param,
        "--tls-client",
        "cli",
        "-f",
    ]);
    assert!(
        show(&out).contains("kube_image provided but not allowed"),
        "{}",
        show(&out)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn pending_timeout_and_sidecars() {
    let c = Cluster::new("k-pending", Options::default());
    let kc = c.token_config("good-token");
    let pod_file = c.tmp.path.join("sidecar.yml");
    std::fs::write(
        &pod_file,
        "spec:\n  containers:\n  - {name: sidecar, image: proxy, command: [sleep, '600']}\n  \
         - {name: worker, image: busybox, command: [cat]}\n",
    )
    .unwrap();
    let node = start_node(&[
        kube_type(
            "stuck",
            &kc,
            "    image: unschedulable\n    command: cat\n    allowruntimeparams: true\n",
        ),
        kube_type(
            "sidecar",
            &kc,
            &format!("    pod: {}\n", pod_file.display()),
        ),
    ]);
    let started = std::time::Instant::now();
    let (st, _, _) = run(
        &node,
        &["stuck", "-l", "x", "--param", "pod_pending_timeout=2s"],
        b"",
    );
    assert_eq!(st["State"], 3, "{st}");
    assert_eq!(
        st["Detail"],
        "Error creating pod: timed out waiting for the condition"
    );
    assert!(started.elapsed() < secs(20));
    assert!(c.kube.pod_names().is_empty(), "the pod was deleted");
    // The pod stays Running with its sidecar; the unit follows the worker.
    let (st, out, _) = run(&node, &["sidecar", "-l", "two containers"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"two containers\n");
    assert!(c.kube.pod_names().is_empty(), "the pod was deleted");
}

/// Raw-socket submit (no receptorctl start-up per pod); the unit ID.
fn submit_raw(node: &Node, worktype: &str, payload: &[u8]) -> String {
    let (mut conn, _) = common::Conn::open(&node.socket);
    let req = serde_json::json!({"command": "work", "subcommand": "submit",
                                 "node": "localhost", "worktype": worktype});
    let created = conn.cmd(&req.to_string());
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .unwrap_or_else(|| panic!("submit reply {created:?}"))
        .to_string();
    conn.send(payload);
    conn.half_close();
    let _ = conn.line();
    id
}

/// `cargo test --release --test kubernetes bench -- --ignored --nocapture`
/// (figures in BENCHMARKS.md): 200 pods, 4 submitters at once, each
/// submit → Succeeded → results fetched → released; then the executor's RSS.
#[test]
#[ignore]
fn bench_pods_per_second_and_rss() {
    let c = Cluster::new("k-bench", Options::default());
    let node = c.node_with("echo", CAT);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let node = &node;
            s.spawn(move || {
                for i in 0..50 {
                    let payload = format!("pod {t}-{i}\n");
                    let id = submit_raw(node, "echo", payload.as_bytes());
                    let st = wait_final(node, &id, secs(60));
                    assert_eq!(st["State"], 2, "{st}");
                    let (mut conn, _) = common::Conn::open(&node.socket);
                    let header = conn.cmd(&format!("work results {id} 0"));
                    assert!(header.contains("Streaming results"), "{header}");
                    conn.half_close();
                    assert_eq!(conn.read_to_end(), payload.as_bytes());
                    let (mut conn, _) = common::Conn::open(&node.socket);
                    let _ = conn.cmd(&format!("work release {id}"));
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let pid = node.daemon_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    eprintln!(
        "200 pods in {elapsed:.1} s: {:.1} pods/s; executor RSS after: {rss}",
        200.0 / elapsed
    );
    assert!(c.kube.pod_names().is_empty(), "every pod deleted");
}

/// Log throughput of one pod: 256 MiB of `yes` through the fake server.
#[test]
#[ignore]
fn bench_log_throughput() {
    let c = Cluster::new("k-bench-log", Options::default());
    let node = c.node_with("sh", "    image: busybox\n    command: sh\n    params: \"-c 'yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c 268435456'\"\n");
    let started = std::time::Instant::now();
    let id = submit_raw(&node, "sh", b"");
    let st = wait_final(&node, &id, secs(600));
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(st["State"], 2, "{st}");
    assert_eq!(st["StdoutSize"], 268435456);
    eprintln!("256 MiB log: {:.0} MB/s", 268.435456 / elapsed);
}

#[test]
fn pending_at_restart_deletes_the_pod_and_fails() {
    let c = Cluster::new("k-pend-restart", Options::default());
    let kc = c.token_config("good-token");
    let items = [kube_type(
        "stuck",
        &kc,
        "    image: unschedulable\n    command: cat\n    deletepodonrestart: true\n",
    )];
    let mut node = start_node(&items);
    let id = submit(&node, &["stuck", "-l", "x"], b"");
    assert!(
        wait_until(secs(20), || !c.kube.pod_names().is_empty()),
        "{}",
        status(&node, &id)
    );
    assert!(wait_until(secs(5), || status(&node, &id)["Detail"] == "Pod created"));
    node.kill();
    node.restart();
    let st = wait_final(&node, &id, secs(20));
    assert_eq!(st["State"], 3, "{st}");
    assert_eq!(
        st["Detail"],
        "Failed to restart: work unit is not in running state, cannot be restarted"
    );
    assert!(c.kube.pod_names().is_empty(), "the pending pod was deleted");
}

#[test]
fn a_broken_watch_is_picked_up_again() {
    let c = Cluster::new(
        "k-watch",
        Options {
            watch_breaks: 3,
            start_delay: Duration::from_millis(1500),
            ..Options::default()
        },
    );
    let node = c.node_with("echo", CAT);
    let (st, out, _) = run(&node, &["echo", "-l", "watched"], b"");
    assert_succeeded(&st, &node);
    assert_eq!(out, b"watched\n");
    let requests = c.kube.record().requests.clone();
    let lists = requests
        .iter()
        .filter(|r| r.ends_with("/pods") && r.starts_with("GET"))
        .count();
    assert!(
        lists >= 4,
        "list or watch again after each break: {requests:?}"
    );
}
