//! Work-unit tests: real receptor processes on 127.0.0.1, driven through the
//! real receptorctl 1.6.9 client and raw control-socket connections (run via
//! tests/run.sh). Blog flows, output compared with the Go capture, on-disk
//! status files, and failure flows (relay deaths, partitions, daemon and
//! runner crashes, cancel, TTL expiry, corrupt status files, 1,000 units).

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    Conn, Node, TempDir, free_port, listener, output_within, peer, receptorctl, secs, show,
    wait_until,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Configuration items
// ---------------------------------------------------------------------------

/// YAML item: a `work-command` work type.
fn work_type(worktype: &str, command: &str, params: &str, allow_runtime: bool) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    let params = serde_json::to_string(params).expect("string");
    format!(
        "- work-command: {{worktype: {worktype}, command: {command}, params: {params}, \
         allowruntimeparams: {allow_runtime}}}"
    )
}

/// `echo-reply`: cat, no runtime params.
fn echo_reply() -> String {
    work_type("echo-reply", "cat", "", false)
}

/// `lines`: prints `line 1` … `line n`, one every 0.2 s.
fn lines_type(n: u32) -> String {
    work_type(
        "lines",
        "sh",
        &format!("-c 'for i in $(seq 1 {n}); do echo line $i; sleep 0.2; done'"),
        false,
    )
}

/// What `lines_type(n)` prints.
fn lines_output(n: u32) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// The Go capture's work type (runs B and F).
fn demo_type() -> String {
    work_type("demo", "sh", "-c \"cat; sleep 3; echo done\"", false)
}

// ---------------------------------------------------------------------------
// Topologies
// ---------------------------------------------------------------------------

/// Waits until `a` and `b` have routes to each other.
fn wait_connected(a: &Node, b: &Node) {
    let ok = wait_until(secs(30), || {
        a.route(&b.id).is_some() && b.route(&a.id).is_some()
    });
    assert!(
        ok,
        "{} and {} did not get routes to each other: {}\n{}\n{}",
        a.id,
        b.id,
        a.status(),
        a.log_tail(20),
        b.log_tail(20)
    );
}

/// controller → relay ← executor (the relay listens); the executor has
/// `types`. Returns (controller, relay, executor) once routes exist.
fn line_mesh(types: &[String]) -> (Node, Node, Node) {
    let p = free_port();
    let relay = Node::start("relay", &[listener(p, 1.0)]);
    let controller = Node::start("controller", &[peer(p, 1.0)]);
    let mut items = vec![peer(p, 1.0)];
    items.extend_from_slice(types);
    let executor = Node::start("executor", &items);
    wait_connected(&controller, &executor);
    (controller, relay, executor)
}

/// controller –(1)– relayA –(1)– executor, controller –(2)– relayB –(2)–
/// executor: relays listen, controller and executor dial both. Returns
/// (controller, relayA, relayB, executor) once both ends route via relayA.
fn diamond(types: &[String]) -> (Node, Node, Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let relay_a = Node::start("relayA", &[listener(pa, 1.0)]);
    let relay_b = Node::start("relayB", &[listener(pb, 2.0)]);
    let controller = Node::start("controller", &[peer(pa, 1.0), peer(pb, 2.0)]);
    let mut items = vec![peer(pa, 1.0), peer(pb, 2.0)];
    items.extend_from_slice(types);
    let executor = Node::start("executor", &items);
    let ok = wait_until(secs(30), || {
        controller.route("executor").as_deref() == Some("relayA")
            && executor.route("controller").as_deref() == Some("relayA")
            && controller.connections() == ["relayA", "relayB"]
            && executor.connections() == ["relayA", "relayB"]
    });
    assert!(
        ok,
        "diamond did not converge: {}\n{}",
        controller.status(),
        executor.status()
    );
    (controller, relay_a, relay_b, executor)
}

// ---------------------------------------------------------------------------
// Raw control-socket helpers
// ---------------------------------------------------------------------------

/// A submitted unit: the final reply line and its fields.
struct Submitted {
    line: String,
    result: String,
    id: String,
}

/// `work submit` as receptorctl does it, over a raw connection: the JSON
/// line, the payload, a half-close, then the result line. `Err` carries an
/// `ERROR:` line (before or after the payload).
fn submit_raw(
    socket: &Path,
    node: &str,
    worktype: &str,
    params: &[(&str, &str)],
    payload: &[u8],
) -> Result<Submitted, String> {
    let (mut conn, _) = Conn::open(socket);
    let mut req = serde_json::Map::new();
    req.insert("command".into(), "work".into());
    req.insert("subcommand".into(), "submit".into());
    req.insert("node".into(), node.into());
    req.insert("worktype".into(), worktype.into());
    for (k, v) in params {
        req.insert((*k).into(), (*v).into());
    }
    let created = conn.cmd(&Value::Object(req).to_string());
    if created.starts_with("ERROR") {
        return Err(created);
    }
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .unwrap_or_else(|| panic!("unexpected submit reply {created:?}"))
        .to_string();
    conn.send(payload);
    conn.half_close();
    let line = conn.line();
    if line.starts_with("ERROR") {
        return Err(line);
    }
    let v: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("submit result {line:?} is not JSON: {e}"));
    assert_eq!(v["unitid"], id.as_str(), "result line {line:?}");
    Ok(Submitted {
        result: v["result"].as_str().unwrap_or_default().to_string(),
        line,
        id,
    })
}

/// `work status <id>` over a raw connection: the raw reply line.
fn status_line(node: &Node, id: &str) -> String {
    node.connect().cmd(&format!("work status {id}"))
}

/// `work status <id>`, parsed; `Err` with the line if it is an ERROR.
fn try_status(node: &Node, id: &str) -> Result<Value, String> {
    let line = status_line(node, id);
    if line.starts_with("ERROR") {
        return Err(line);
    }
    serde_json::from_str(&line).map_err(|e| format!("{line:?} is not JSON: {e}"))
}

/// `work status <id>`, parsed; panics on an ERROR reply.
fn status_of(node: &Node, id: &str) -> Value {
    try_status(node, id).unwrap_or_else(|e| panic!("{}: work status {id}: {e}", node.id))
}

/// `work list` over a raw connection, parsed.
fn list_units(node: &Node) -> BTreeMap<String, Value> {
    let line = node.connect().cmd("work list");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("work list {line:?}: {e}"))
}

fn state(v: &Value) -> i64 {
    v["State"].as_i64().unwrap_or(-1)
}

fn stdout_size(v: &Value) -> u64 {
    v["StdoutSize"].as_u64().unwrap_or(0)
}

/// Waits until `cond` holds for the unit's status; panics with the last
/// status and the node's log otherwise. Returns the status that matched.
fn wait_status(
    node: &Node,
    id: &str,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(timeout, || {
        last = try_status(node, id).unwrap_or_else(Value::String);
        cond(&last)
    });
    assert!(
        ok,
        "{}: unit {id} not {what} within {timeout:?}; last status {last}\n{}",
        node.id,
        node.log_tail(30)
    );
    last
}

/// Waits until the unit reaches `want` (State).
fn wait_state(node: &Node, id: &str, want: i64, timeout: Duration) -> Value {
    wait_status(node, id, timeout, &format!("in state {want}"), |v| {
        state(v) == want
    })
}

/// `work results <id> 0` over a raw connection, half-closing after the
/// header as receptorctl does; everything until the server closes. `Err`
/// if the stream does not end within `timeout` or the header is an error.
fn results_raw(socket: &Path, id: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("greeting: {e}"))?;
    w.write_all(format!("work results {id} 0\n").as_bytes())
        .map_err(|e| e.to_string())?;
    line.clear();
    r.read_line(&mut line).map_err(|e| format!("header: {e}"))?;
    if line != format!("Streaming results for work unit {id}\n") {
        return Err(format!("results header {line:?}"));
    }
    w.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "results stream still open after {timeout:?}; got {} bytes",
                out.len()
            ));
        }
        r.get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("reading results: {e}")),
        }
    }
}

/// `work results` that must succeed within `timeout`, as text.
fn results_text(node: &Node, id: &str, timeout: Duration) -> String {
    let bytes = results_raw(&node.socket, id, timeout)
        .unwrap_or_else(|e| panic!("{}: work results {id}: {e}\n{}", node.id, node.log_tail(30)));
    String::from_utf8(bytes).expect("results are UTF-8")
}

// ---------------------------------------------------------------------------
// Disk and process helpers
// ---------------------------------------------------------------------------

/// Names of the unit directories (and anything else) under the node's
/// `<datadir>/<node>/`; empty if that directory does not exist.
fn units_on_disk(node: &Node) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(node.units_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn unit_file(node: &Node, id: &str, name: &str) -> PathBuf {
    node.units_dir().join(id).join(name)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let st = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(st, Some("Z" | "X") | None)
}

/// argv of a process, joined with spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// SIGKILL to `pid` (negative: a process group).
fn kill9(pid: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The command PID in a `Running: PID <n>` Detail.
fn detail_pid(status: &Value) -> u32 {
    let d = status["Detail"].as_str().unwrap_or_default();
    d.strip_prefix("Running: PID ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("Detail {d:?} carries no PID"))
}

// ---------------------------------------------------------------------------
// receptorctl helpers
// ---------------------------------------------------------------------------

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr lines without receptorctl's version-mismatch warning.
fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Warning: receptorctl and receptor are different versions"))
        .map(str::to_string)
        .collect()
}

/// Runs receptorctl against `node` with `input` on its stdin.
fn ctl_stdin(node: &Node, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(receptorctl());
    cmd.arg("--socket")
        .arg(&node.socket)
        .args(args)
        .env_remove("RECEPTORCTL_SOCKET");
    common::output_with_input(cmd, Some(input), common::CMD_TIMEOUT)
}

/// Asserts a receptorctl run succeeded (exit 0) and returns its stdout.
fn ok_stdout(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", show(out));
    stdout(out)
}

/// The unit ID in receptorctl's `Unit ID: <id>` line.
fn unit_id_line(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .unwrap_or_else(|| panic!("no Unit ID line in {text:?}"))
        .to_string()
}

fn is_unit_id(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The executor-side unit ID of a remote unit, once the submit has reached it.
fn remote_unit_id(controller: &Node, id: &str) -> String {
    let st = wait_status(controller, id, secs(30), "started remotely", |v| {
        v["ExtraData"]["RemoteStarted"] == true
    });
    st["ExtraData"]["RemoteUnitID"]
        .as_str()
        .expect("RemoteUnitID")
        .to_string()
}

// ---------------------------------------------------------------------------
// Go capture (tests/vectors)
// ---------------------------------------------------------------------------

fn vectors(file: &str) -> Value {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read vectors")).expect("JSON")
}

/// A receptorctl run from the Go capture: exit code, stdout, stderr lines
/// (without the version warning).
struct GoCli {
    exit: i32,
    stdout: String,
    stderr: Vec<String>,
}

fn go_cli(name: &str) -> GoCli {
    let v = &vectors("control-transcripts.json")["cli"][name];
    GoCli {
        exit: v["exit_code"].as_i64().expect("exit_code") as i32,
        stdout: v["stdout"].as_str().expect("stdout").to_string(),
        stderr: v["stderr"]
            .as_str()
            .expect("stderr")
            .lines()
            .filter(|l| !l.starts_with("Warning: receptorctl and receptor are different versions"))
            .map(str::to_string)
            .collect(),
    }
}

/// Replaces each `(from, to)` in `text`.
fn subst(text: &str, pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Asserts a receptorctl run printed what Go's did (after replacing Go's
/// unit IDs/PIDs with ours) with the same exit code.
fn assert_like_go(name: &str, out: &Output, pairs: &[(&str, &str)]) {
    let go = go_cli(name);
    assert_eq!(
        out.status.code(),
        Some(go.exit),
        "{name}: exit code: {}",
        show(out)
    );
    assert_eq!(
        stdout(out),
        subst(&go.stdout, pairs),
        "{name}: stdout differs from Go's: {}",
        show(out)
    );
    let go_err: Vec<String> = go.stderr.iter().map(|l| subst(l, pairs)).collect();
    assert_eq!(stderr_lines(out), go_err, "{name}: stderr: {}", show(out));
}

/// The server's reply line in a Go transcript (the 3rd exchange row).
fn go_reply(transcript: &str) -> String {
    let t = &vectors("control-transcripts.json")["transcripts"][transcript];
    let rows = t["exchange"].as_array().expect("exchange");
    rows.iter()
        .filter(|r| r["dir"] == "S>C")
        .nth(1)
        .and_then(|r| r["text"].as_str())
        .expect("reply row")
        .trim_end_matches('\n')
        .to_string()
}

/// Bytes of a file in the Go status-files capture.
fn go_file(run: &str, phase: &str, path: &str) -> Vec<u8> {
    let v = &vectors("status-files.json")[run][phase]["files_hex"][path];
    let hex = v
        .as_str()
        .unwrap_or_else(|| panic!("no {run}/{phase}/{path}"));
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

// ===========================================================================
// Blog flows
// ===========================================================================

#[test]
fn gather_hostname_rm_follow_releases_both_ends() {
    let (controller, _relay, executor) =
        line_mesh(&[work_type("gather-hostname", "hostname", "", false)]);
    let out = controller.ctl(&[
        "work",
        "submit",
        "gather-hostname",
        "--node",
        "executor",
        "--no-payload",
        "--rm",
        "-f",
    ]);
    let text = ok_stdout(&out, "submit gather-hostname");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host = host.trim_end();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "stdout {text:?}");
    assert_eq!(lines[0], host, "stdout {text:?}");
    let released = lines[1]
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(", released)"))
        .unwrap_or_else(|| panic!("release line {:?}", lines[1]));
    assert!(is_unit_id(released), "unit id {released:?}");
    assert_eq!(text, format!("{host}\n({released}, released)\n"));

    // --rm released both ends: nothing listed, no unit directories.
    for node in [&controller, &executor] {
        let list = node.ctl(&["work", "list"]);
        assert_eq!(
            ok_stdout(&list, "work list"),
            "{}\n",
            "{}: work list after --rm",
            node.id
        );
        assert_eq!(
            units_on_disk(node),
            Vec::<String>::new(),
            "{}: unit dirs left in {}",
            node.id,
            node.units_dir().display()
        );
    }
}

#[test]
fn cat_files_runtime_params_and_refused_params() {
    let (controller, _relay, executor) =
        line_mesh(&[work_type("cat-files", "cat", "", true), echo_reply()]);
    let tmp = TempDir::new("catfiles");
    let file = tmp.path.join("some file.txt");
    let content = "first line\nsecond line\n\tthird, tabbed\n";
    std::fs::write(&file, content).expect("write file");
    let plain = tmp.path.join("plain.txt");
    std::fs::write(&plain, "plain contents\n").expect("write file");

    // --param params=<file> (quoted, since the name has a space: shlex rules)
    let quoted = format!("params='{}'", file.display());
    let out = controller.ctl(&[
        "work",
        "submit",
        "cat-files",
        "--node",
        "executor",
        "-n",
        "--param",
        &quoted,
        "-f",
    ]);
    assert_eq!(ok_stdout(&out, "cat-files --param"), content);

    // trailing command params: -n -- <file>
    let p = plain.display().to_string();
    let out = controller.ctl(&[
        "work",
        "submit",
        "cat-files",
        "--node",
        "executor",
        "-n",
        "-f",
        "--",
        &p,
    ]);
    assert_eq!(ok_stdout(&out, "cat-files -- file"), "plain contents\n");

    // Both units are listed as Succeeded.
    let units = list_units(&executor);
    let mut types: Vec<String> = units
        .values()
        .map(|u| {
            assert_eq!(state(u), 2, "{u}");
            u["WorkType"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    types.sort();
    assert_eq!(types, ["cat-files", "cat-files"]);

    // A type without allowruntimeparams refuses them: remotely ...
    let before = units_on_disk(&executor);
    let out = controller.ctl(&[
        "work",
        "submit",
        "echo-reply",
        "--node",
        "executor",
        "-n",
        "-a",
        "params=x",
    ]);
    assert_eq!(out.status.code(), Some(101), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("extra params provided but not allowed"),
        "{}",
        show(&out)
    );
    assert_eq!(
        units_on_disk(&executor),
        before,
        "refused remote submit left a unit directory on the executor"
    );
    // ... and locally, on the executor's own socket.
    let out = executor.ctl(&["work", "submit", "echo-reply", "-n", "-a", "params=x"]);
    assert_eq!(out.status.code(), Some(101), "{}", show(&out));
    assert_eq!(
        stderr_lines(&out),
        ["ERROR: Failed to start work unit: extra params provided but not allowed"],
        "{}",
        show(&out)
    );
    assert_eq!(
        units_on_disk(&executor),
        before,
        "refused local submit left a unit directory"
    );
    assert_eq!(list_units(&executor).len(), 2);
}

#[test]
fn echo_reply_payload_forms_are_byte_exact() {
    let (controller, _relay, _executor) = line_mesh(&[echo_reply()]);
    let tmp = TempDir::new("payload");

    // -p FILE: binary-ish bytes, no trailing newline, larger than one chunk.
    let mut payload: Vec<u8> = b"alpha\nbeta\x00gamma \t\r\n\n".to_vec();
    let mut x: u32 = 12345;
    while payload.len() < 200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        payload.push((x >> 16) as u8);
    }
    payload.extend_from_slice(b"no newline at end");
    let file = tmp.path.join("payload.bin");
    std::fs::write(&file, &payload).expect("write payload");
    let f = file.display().to_string();
    let out = controller.ctl(&[
        "work",
        "submit",
        "echo-reply",
        "--node",
        "executor",
        "-p",
        &f,
        "-f",
    ]);
    assert!(out.status.success(), "-p FILE: {}", show(&out));
    assert!(
        out.stdout == payload,
        "-p FILE: output differs from payload"
    );

    // -p - : payload from stdin.
    let input = b"from stdin\nsecond line without newline";
    let out = ctl_stdin(
        &controller,
        &[
            "work",
            "submit",
            "echo-reply",
            "--node",
            "executor",
            "-p",
            "-",
            "-f",
        ],
        input,
    );
    assert!(out.status.success(), "-p -: {}", show(&out));
    assert_eq!(out.stdout, input, "-p -: {}", show(&out));

    // -l TEXT: receptorctl adds a newline.
    let out = controller.ctl(&[
        "work",
        "submit",
        "echo-reply",
        "--node",
        "executor",
        "-l",
        "hello  literal world",
        "-f",
    ]);
    assert_eq!(ok_stdout(&out, "-l"), "hello  literal world\n");

    // -n: nothing at all.
    let out = controller.ctl(&[
        "work",
        "submit",
        "echo-reply",
        "--node",
        "executor",
        "-n",
        "-f",
    ]);
    assert_eq!(ok_stdout(&out, "-n"), "");
}

// ===========================================================================
// Output compared with the Go capture (run B/F: node1 listens, node2 dials,
// both with the `demo` work type)
// ===========================================================================

fn go_pair() -> (Node, Node) {
    let p = free_port();
    let node1 = Node::start("node1", &[listener(p, 1.0), demo_type()]);
    let node2 = Node::start("node2", &[peer(p, 1.0), demo_type()]);
    wait_connected(&node1, &node2);
    (node1, node2)
}

#[test]
fn receptorctl_work_outputs_match_go_capture() {
    let (node1, node2) = go_pair();

    // `--rm -f`, remote and local, at the same time.
    let (remote, local) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            node1.ctl(&[
                "work", "submit", "demo", "--node", "node2", "-l", "hello", "--rm", "-f",
            ])
        });
        let l = s.spawn(|| node1.ctl(&["work", "submit", "demo", "-l", "hello", "--rm", "-f"]));
        (r.join().expect("remote"), l.join().expect("local"))
    });
    for (name, go_id, out) in [
        ("work_submit_remote_rm_f", "sOmZnJKf", &remote),
        ("work_submit_local_rm_f", "R7tXVnYB", &local),
    ] {
        let text = stdout(out);
        let id = text
            .lines()
            .last()
            .and_then(|l| l.strip_prefix('('))
            .and_then(|l| l.split_once(','))
            .map(|(id, _)| id.to_string())
            .unwrap_or_else(|| panic!("{name}: {}", show(out)));
        assert!(is_unit_id(&id), "{name}: {}", show(out));
        assert_like_go(name, out, &[(go_id, &id)]);
    }
    assert!(list_units(&node1).is_empty(), "--rm left units on node1");
    assert!(list_units(&node2).is_empty(), "--rm left units on node2");

    // Submit without --follow.
    let out = node1.ctl(&["work", "submit", "demo", "--node", "node2", "-l", "hello"]);
    let id = unit_id_line(&ok_stdout(&out, "submit"));
    assert!(is_unit_id(&id), "{}", show(&out));
    assert_like_go("work_submit_remote_nofollow", &out, &[("5hrgl00e", &id)]);

    // `work list` while it runs (after `hello\n` came back: StdoutSize 6).
    let st = wait_status(&node1, &id, secs(15), "running with 6 bytes", |v| {
        state(v) == 1 && stdout_size(v) == 6
    });
    let rid = st["ExtraData"]["RemoteUnitID"]
        .as_str()
        .expect("RemoteUnitID")
        .to_string();
    let pid = detail_pid(&st).to_string();
    let out = node1.ctl(&["work", "list"]);
    assert_like_go(
        "work_list_running",
        &out,
        &[
            ("5hrgl00e", &id),
            ("1TevxdYp", &rid),
            ("PID 28212", &format!("PID {pid}")),
        ],
    );

    let ids: &[(&str, &str)] = &[("5hrgl00e", &id), ("1TevxdYp", &rid)];
    assert_like_go("work_results", &node1.ctl(&["work", "results", &id]), ids);
    // results returns once the unit is complete, but the controller may
    // still be fetching the last bytes: wait for a settled status.
    wait_state(&node1, &id, 2, secs(10));
    assert_like_go("work_list", &node1.ctl(&["work", "list"]), ids);
    assert_like_go("work_list_q", &node1.ctl(&["work", "list", "-q"]), ids);
    assert_like_go(
        "work_list_node2",
        &node1.ctl(&["work", "list", "--node", "node2"]),
        ids,
    );
    assert_like_go("work_release", &node1.ctl(&["work", "release", &id]), ids);
    assert!(
        list_units(&node1).is_empty(),
        "release left the unit on node1"
    );
    assert!(
        list_units(&node2).is_empty(),
        "release left the unit on node2"
    );
    assert_eq!(units_on_disk(&node1), Vec::<String>::new());
    assert_eq!(units_on_disk(&node2), Vec::<String>::new());

    // Errors.
    assert_like_go(
        "work_release_unknown",
        &node1.ctl(&["work", "release", "nosuchunit"]),
        &[],
    );
    assert_like_go(
        "work_results_unknown",
        &node1.ctl(&["work", "results", "nosuchunit"]),
        &[],
    );
    assert_like_go(
        "work_submit_bad_type",
        &node1.ctl(&["work", "submit", "nope", "-n"]),
        &[],
    );
    assert_eq!(units_on_disk(&node1), Vec::<String>::new());
}

#[test]
fn status_replies_and_status_files_match_go_capture() {
    let (node1, node2) = go_pair();
    let remote =
        submit_raw(&node1.socket, "node2", "demo", &[], b"hello remote\n").expect("remote submit");
    let local = submit_raw(&node1.socket, "localhost", "demo", &[], b"hello local\n")
        .expect("local submit");
    for s in [&remote, &local] {
        assert_eq!(s.result, "Job Started");
        assert_eq!(
            s.line,
            format!("{{\"result\":\"Job Started\",\"unitid\":\"{}\"}}", s.id)
        );
    }
    let (rid, lid) = (remote.id.as_str(), local.id.as_str());
    let exec_id = remote_unit_id(&node1, rid);

    wait_state(&node1, lid, 2, secs(20));
    wait_state(&node1, rid, 2, secs(20));
    let stdout_path = unit_file(&node1, rid, "stdout");
    assert!(
        wait_until(secs(10), || file_len(&stdout_path) == 18),
        "controller stdout never complete: {:?}",
        std::fs::read(&stdout_path)
    );

    // Control-service replies, byte for byte.
    let remote_pairs: &[(&str, &str)] = &[("2e6IeY3q", rid), ("j4bLSmVp", &exec_id)];
    let go_remote = subst(&go_reply("work_status_remote_done"), remote_pairs);
    let go_local = subst(&go_reply("work_status_local_done"), &[("3EcpOkRH", lid)]);
    assert_eq!(status_line(&node1, rid), go_remote);
    assert_eq!(status_line(&node1, lid), go_local);
    let mut entries = [(rid, &go_remote), (lid, &go_local)];
    entries.sort();
    let want_list = format!(
        "{{\"{}\":{},\"{}\":{}}}",
        entries[0].0, entries[0].1, entries[1].0, entries[1].1
    );
    assert_eq!(node1.connect().cmd("work list"), want_list);
    assert_eq!(
        node1.connect().cmd(&format!("work list {lid}")),
        format!("{{\"{lid}\":{go_local}}}")
    );
    assert_eq!(
        node1.connect().cmd("work status nosuchunit"),
        go_reply("work_status_nosuchunit")
    );

    // Status files (run F, succeeded), with our IDs.
    let f_pairs: &[(&str, &str)] = &[("LOSn3l31", rid), ("zdnOJj1M", &exec_id)];
    let go_text = |path: &str| {
        subst(
            &String::from_utf8(go_file("run_F_remote_unit", "succeeded", path)).expect("utf8"),
            f_pairs,
        )
    };
    let read = |node: &Node, id: &str, name: &str| {
        String::from_utf8(std::fs::read(unit_file(node, id, name)).expect("read unit file"))
            .expect("utf8")
    };
    for name in ["status", "status.lock", "stdin", "stdout"] {
        assert_eq!(
            read(&node1, rid, name),
            go_text(&format!("data1/node1/LOSn3l31/{name}")),
            "controller {name}"
        );
        assert_eq!(
            read(&node2, &exec_id, name),
            go_text(&format!("data2/node2/zdnOJj1M/{name}")),
            "executor {name}"
        );
    }
    // The local unit: status bytes as in run B.
    assert_eq!(
        read(&node1, lid, "status"),
        "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":17,\"WorkType\":\"demo\",\"ExtraData\":null}\n"
    );
    assert_eq!(read(&node1, lid, "stdout"), "hello local\ndone\n");
    assert_eq!(read(&node1, lid, "stdin"), "hello local\n");

    // Modes and layout: dirs 0700, files 0600, exactly the four files.
    for (node, id) in [(&node1, rid), (&node1, lid), (&node2, exec_id.as_str())] {
        for d in [node.data_dir(), node.units_dir(), node.units_dir().join(id)] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        let mut files: Vec<String> = std::fs::read_dir(node.units_dir().join(id))
            .expect("unit dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["status", "status.lock", "stdin", "stdout"]);
        for f in &files {
            let p = unit_file(node, id, f);
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

// ===========================================================================
// Failure flows
// ===========================================================================

/// Submits `lines` from `controller` to `executor`, waits until the
/// controller has seen at least `min_bytes` of output; returns the unit ID.
fn start_lines(controller: &Node, min_bytes: u64) -> String {
    let s = submit_raw(&controller.socket, "executor", "lines", &[], b"").expect("submit lines");
    assert_eq!(s.result, "Job Started", "{}", s.line);
    wait_status(
        controller,
        &s.id,
        secs(20),
        &format!("running with {min_bytes} bytes"),
        |v| state(v) == 1 && stdout_size(v) >= min_bytes,
    );
    s.id
}

/// Waits until a controller unit is Succeeded with all `want` bytes local,
/// then checks `work results` is exactly `want`.
fn assert_completes(controller: &Node, id: &str, want: &str, timeout: Duration) {
    let st = wait_state(controller, id, 2, timeout);
    assert_eq!(stdout_size(&st), want.len() as u64, "{st}");
    let got = results_text(controller, id, secs(20));
    assert!(
        got == want,
        "stdout differs (len {} vs {}):\n--- got ---\n{got}--- want ---\n{want}",
        got.len(),
        want.len()
    );
}

#[test]
fn diamond_relay_death_mid_run_keeps_output_complete() {
    const N: u32 = 30;
    let (controller, mut relay_a, _relay_b, _executor) = diamond(&[lines_type(N)]);
    let id = start_lines(&controller, 40);
    relay_a.kill();
    let t = Instant::now();
    assert_completes(&controller, &id, &lines_output(N), secs(40));
    println!("diamond: unit finished {:?} after relayA died", t.elapsed());
}

#[test]
fn partition_heals_after_unit_finished_remotely() {
    const N: u32 = 20;
    let (controller, mut relay_a, mut relay_b, executor) = diamond(&[lines_type(N)]);
    let id = start_lines(&controller, 30);
    let exec_id = remote_unit_id(&controller, &id);
    relay_a.kill();
    relay_b.kill();
    let killed = Instant::now();
    // The executor finishes on its own meanwhile.
    let st = wait_state(&executor, &exec_id, 2, secs(30));
    assert_eq!(stdout_size(&st), lines_output(N).len() as u64);
    let local = status_of(&controller, &id);
    assert_ne!(state(&local), 2, "controller cannot know yet: {local}");

    relay_b.restart();
    let back = Instant::now();
    let mut routed = None;
    let want = lines_output(N);
    let stdout_path = unit_file(&controller, &id, "stdout");
    let ok = wait_until(secs(30), || {
        if routed.is_none() && controller.route("executor").is_some() {
            routed = Some(back.elapsed());
        }
        state(&status_of(&controller, &id)) == 2 && file_len(&stdout_path) == want.len() as u64
    });
    let done = back.elapsed();
    assert!(
        ok,
        "controller unit not complete 30 s after relayB came back: {}\n{}",
        status_of(&controller, &id),
        controller.log_tail(30)
    );
    println!(
        "partition: relays down {:?}; after relayB restart: route back in {:?}, unit \
         Succeeded with complete stdout in {done:?}",
        back - killed,
        routed.unwrap_or(done)
    );
    assert_completes(&controller, &id, &want, secs(5));
}

#[test]
fn controller_crash_and_restart_resumes_without_duplicates() {
    const N: u32 = 25;
    let (mut controller, _relay, _executor) = line_mesh(&[lines_type(N)]);
    let id = start_lines(&controller, 20);
    // Let some output arrive locally first, so the restart resumes mid-file.
    let stdout_path = unit_file(&controller, &id, "stdout");
    assert!(
        wait_until(secs(10), || file_len(&stdout_path) > 0),
        "no output arrived on the controller"
    );
    controller.kill();
    std::thread::sleep(Duration::from_millis(700));
    controller.restart();
    let t = Instant::now();
    assert_completes(&controller, &id, &lines_output(N), secs(40));
    println!(
        "controller restart: unit complete {:?} after restart",
        t.elapsed()
    );
}

#[test]
fn executor_daemon_crash_leaves_unit_running_and_restart_completes_it() {
    const N: u32 = 25;
    let (controller, _relay, mut executor) = line_mesh(&[lines_type(N)]);
    let id = start_lines(&controller, 20);
    let exec_id = remote_unit_id(&controller, &id);
    let runner = status_of(&executor, &exec_id)["ExtraData"]["Pid"]
        .as_u64()
        .expect("runner Pid") as u32;
    let out_path = unit_file(&executor, &exec_id, "stdout");

    executor.kill();
    let before = file_len(&out_path);
    std::thread::sleep(Duration::from_millis(1200));
    let after = file_len(&out_path);
    assert!(
        after > before,
        "the unit stopped with its daemon: stdout {before} -> {after} bytes"
    );
    assert!(alive(runner), "runner {runner} died with the daemon");

    executor.restart();
    let t = Instant::now();
    let st = wait_state(&executor, &exec_id, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    assert_completes(&controller, &id, &lines_output(N), secs(40));
    assert_eq!(
        std::fs::read_to_string(&out_path).expect("executor stdout"),
        lines_output(N)
    );
    println!(
        "executor restart: unit complete {:?} after restart",
        t.elapsed()
    );
}

#[test]
fn executor_crash_with_runner_and_command_killed_fails_the_unit() {
    const N: u32 = 100;
    let (controller, _relay, mut executor) = line_mesh(&[lines_type(N)]);
    let id = start_lines(&controller, 20);
    let exec_id = remote_unit_id(&controller, &id);
    let st = wait_status(&executor, &exec_id, secs(10), "running", |v| state(v) == 1);
    let runner = st["ExtraData"]["Pid"].as_u64().expect("runner Pid") as u32;
    let command = detail_pid(&st);
    assert!(
        cmdline(runner).contains("--command-runner"),
        "PID {runner} is not the runner: {}",
        cmdline(runner)
    );
    assert!(
        cmdline(command).starts_with("sh "),
        "PID {command} is not the command: {}",
        cmdline(command)
    );

    executor.kill();
    kill9(runner as i32);
    kill9(-(command as i32));
    kill9(command as i32);
    assert!(
        wait_until(secs(5), || !alive(runner) && !alive(command)),
        "runner/command still alive"
    );
    let partial =
        std::fs::read_to_string(unit_file(&executor, &exec_id, "stdout")).expect("stdout");
    let on_disk =
        std::fs::read_to_string(unit_file(&executor, &exec_id, "status")).expect("status");
    assert!(
        on_disk.contains("\"State\":1"),
        "status before restart: {on_disk}"
    );

    executor.restart();
    let gone = |v: &Value| {
        let d = v["Detail"].as_str().unwrap_or_default().to_lowercase();
        state(v) == 3 && d.contains("runner") && d.contains("gone")
    };
    let st = wait_status(&executor, &exec_id, secs(10), "Failed (runner gone)", gone);
    assert_eq!(st["StateName"], "Failed");
    assert_eq!(st["ExtraData"], Value::Null, "{st}");
    let cst = wait_status(&controller, &id, secs(30), "Failed (runner gone)", gone);
    assert_eq!(cst["Detail"], st["Detail"]);
    // Results end, with exactly what the command wrote before it died.
    let got = results_text(&controller, &id, secs(20));
    assert_eq!(got, partial);
    assert!(
        !partial.is_empty() && lines_output(N).starts_with(&partial),
        "{partial:?}"
    );
    // receptorctl reports the failure.
    let out = controller.ctl(&["work", "results", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stdout(&out), partial);
    let detail = st["Detail"].as_str().expect("Detail");
    assert!(
        stderr_lines(&out).contains(&format!("ERROR: Remote unit failed: {detail}")),
        "{}",
        show(&out)
    );
}

#[test]
fn cancel_remote_unit_stops_it_and_results_end() {
    const N: u32 = 100;
    let (controller, _relay, executor) = line_mesh(&[lines_type(N)]);
    let id = start_lines(&controller, 20);
    let exec_id = remote_unit_id(&controller, &id);
    let st = wait_status(&executor, &exec_id, secs(10), "running", |v| state(v) == 1);
    let command = detail_pid(&st);

    let out = controller.ctl(&["work", "cancel", &id]);
    assert_eq!(
        ok_stdout(&out, "work cancel"),
        format!("Cancelled:\n({id}, cancelled)\n")
    );
    let st = wait_state(&controller, &id, 4, secs(20));
    assert_eq!(st["StateName"], "Canceled", "{st}");
    assert_eq!(st["ExtraData"]["LocalCancelled"], true, "{st}");
    let est = wait_state(&executor, &exec_id, 4, secs(10));
    assert_eq!(est["Detail"], "Canceled", "{est}");
    assert!(
        wait_until(secs(15), || !alive(command)),
        "command {command} still runs after cancel"
    );

    // `work results` on the canceled unit ends (Go's never does).
    let got = results_text(&controller, &id, secs(15));
    assert!(
        got.len() >= 20 && lines_output(N).starts_with(&got),
        "results of the canceled unit: {got:?}"
    );
    let mut cmd = Command::new(receptorctl());
    cmd.arg("--socket")
        .arg(&controller.socket)
        .args(["work", "results", &id]);
    let out = output_within(cmd, secs(20));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), got);
}

#[test]
fn ttl_expires_remote_work_that_never_started() {
    let p = free_port();
    let controller = Node::start("controller", &[listener(p, 1.0)]);
    let mut executor = Node::start("executor", &[peer(p, 1.0), echo_reply()]);
    wait_connected(&controller, &executor);
    executor.kill();
    assert!(
        wait_until(secs(20), || controller.route("executor").is_none()),
        "route to the dead executor stayed: {}",
        controller.status()
    );
    let out = controller.ctl(&[
        "work",
        "submit",
        "echo-reply",
        "--node",
        "executor",
        "-l",
        "hi",
        "--ttl",
        "2s",
    ]);
    let text = ok_stdout(&out, "submit --ttl");
    let id = unit_id_line(&text);
    assert_eq!(text, format!("Result: Job Submitted\nUnit ID: {id}\n"));
    let st = wait_state(&controller, &id, 3, secs(20));
    let detail = st["Detail"].as_str().expect("Detail");
    let stamp = detail
        .strip_prefix("Work unit expired on ")
        .unwrap_or_else(|| panic!("Detail {detail:?}"));
    // Go layout `Mon Jan 2 15:04:05`.
    let parts: Vec<&str> = stamp.split(' ').collect();
    assert_eq!(parts.len(), 4, "stamp {stamp:?}");
    assert!(
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&parts[0]),
        "{stamp:?}"
    );
    assert!(parts[1].len() == 3, "{stamp:?}");
    assert!(
        parts[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d)) && !parts[2].starts_with('0'),
        "{stamp:?}"
    );
    assert!(
        parts[3].len() == 8 && parts[3].split(':').count() == 3,
        "{stamp:?}"
    );
    assert_eq!(st["ExtraData"]["RemoteStarted"], false, "{st}");
}

#[test]
fn force_release_removes_locally_when_executor_is_unreachable() {
    let p = free_port();
    let controller = Node::start("controller", &[listener(p, 1.0)]);
    let mut executor = Node::start("executor", &[peer(p, 1.0), echo_reply()]);
    wait_connected(&controller, &executor);
    let s =
        submit_raw(&controller.socket, "executor", "echo-reply", &[], b"bye\n").expect("submit");
    wait_state(&controller, &s.id, 2, secs(20));
    assert_eq!(results_text(&controller, &s.id, secs(10)), "bye\n");
    executor.kill();
    assert!(
        wait_until(secs(20), || controller.route("executor").is_none()),
        "route to the dead executor stayed: {}",
        controller.status()
    );
    let out = controller.ctl(&["work", "release", "--force", &s.id]);
    assert_eq!(
        ok_stdout(&out, "release --force"),
        format!("Released:\n({}, released)\n", s.id)
    );
    assert!(list_units(&controller).is_empty(), "unit still listed");
    assert_eq!(units_on_disk(&controller), Vec::<String>::new());
    // The node still answers (dropping a dead node would panic too).
    assert!(controller.status()["NodeID"] == "controller");
}

#[test]
fn corrupt_and_truncated_status_files_are_skipped_at_startup() {
    // A listener only so the node has a backend (else it exits: nothing to do).
    let mut node = Node::start("lonely", &[listener(free_port(), 1.0), echo_reply()]);
    let mut ids = Vec::new();
    for i in 0..4 {
        let s = submit_raw(
            &node.socket,
            "localhost",
            "echo-reply",
            &[],
            format!("unit {i}\n").as_bytes(),
        )
        .expect("submit");
        ids.push(s.id);
    }
    for id in &ids {
        wait_state(&node, id, 2, secs(20));
    }
    node.kill();
    let (garbage, truncated) = (&ids[0], &ids[1]);
    std::fs::write(
        unit_file(&node, garbage, "status"),
        b"\x00\xffnot json at all{{{\n",
    )
    .expect("write garbage");
    let status = unit_file(&node, truncated, "status");
    let full = std::fs::read(&status).expect("status");
    std::fs::write(&status, &full[..full.len() / 2]).expect("truncate");
    let empty = "EmptyDir";
    std::fs::create_dir(node.units_dir().join(empty)).expect("empty unit dir");
    let log_before = node.log().len();

    node.restart();
    let mut healthy = ids[2..].to_vec();
    healthy.sort();
    let listed: Vec<String> = list_units(&node).into_keys().collect();
    assert_eq!(listed, healthy, "work list after restart");
    let log = node.log()[log_before..].to_string();
    for bad in [garbage, truncated] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("ERROR") && l.contains(bad.as_str())),
            "no ERROR log line names corrupt unit {bad}:\n{log}"
        );
        assert_eq!(
            status_line(&node, bad),
            format!("ERROR: unknown work unit {bad}")
        );
    }
    // Healthy units keep their results; the daemon still works.
    assert_eq!(results_text(&node, &ids[2], secs(10)), "unit 2\n");
    let s = submit_raw(&node.socket, "localhost", "echo-reply", &[], b"after\n").expect("submit");
    wait_state(&node, &s.id, 2, secs(20));
    assert_eq!(results_text(&node, &s.id, secs(10)), "after\n");
    assert!(node.is_running(), "{}", node.log_tail(20));
}

#[test]
fn thousand_remote_units_all_succeed() {
    let n: usize = std::env::var("WORK_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    const THREADS: usize = 4;
    let p = free_port();
    let executor = Node::start("executor", &[listener(p, 1.0), echo_reply()]);
    let controller = Node::start("controller", &[peer(p, 1.0)]);
    wait_connected(&controller, &executor);
    let payload = |i: usize| format!("unit {i} says hello\n");

    let start = Instant::now();
    let socket = controller.socket.clone();
    let mut ids: Vec<(usize, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let socket = socket.clone();
                s.spawn(move || {
                    (t..n)
                        .step_by(THREADS)
                        .map(|i| {
                            let sub = submit_raw(
                                &socket,
                                "executor",
                                "echo-reply",
                                &[],
                                payload(i).as_bytes(),
                            )
                            .unwrap_or_else(|e| panic!("submit {i}: {e}"));
                            assert_eq!(sub.result, "Job Started", "{}", sub.line);
                            (i, sub.id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("submitter"))
            .collect()
    });
    ids.sort();
    let submitted = start.elapsed();

    let mut last = BTreeMap::new();
    let all_done = wait_until(secs(300), || {
        last = list_units(&controller);
        let failed: Vec<(&String, &Value)> = last.iter().filter(|(_, v)| state(v) == 3).collect();
        assert!(
            failed.is_empty(),
            "{} of {n} units Failed, e.g. {} {}",
            failed.len(),
            failed[0].0,
            failed[0].1
        );
        last.len() == n && last.values().all(|v| state(v) == 2)
    });
    let succeeded = start.elapsed();
    let counts = last.values().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(state(v)).or_insert(0) += 1;
        m
    });
    assert!(
        all_done,
        "not all {n} units Succeeded: states {counts:?}\n{}",
        controller.log_tail(20)
    );

    // Every unit's output, over raw sockets.
    let chunks: Vec<&[(usize, String)]> = ids.chunks(n.div_ceil(THREADS).max(1)).collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let socket = socket.clone();
            s.spawn(move || {
                for (i, id) in chunk {
                    let got = results_raw(&socket, id, secs(30))
                        .unwrap_or_else(|e| panic!("results {id}: {e}"));
                    assert_eq!(got, payload(*i).as_bytes(), "unit {i} ({id})");
                }
            });
        }
    });
    let verified = start.elapsed();
    let exec_units = list_units(&executor);
    assert_eq!(exec_units.len(), n);
    assert!(exec_units.values().all(|v| state(v) == 2));

    let hwm = |node: &Node| vm_hwm_kib(node.daemon_pid().expect("running"));
    println!(
        "{n} remote units: submitted in {submitted:?}, all Succeeded after {succeeded:?}, \
         results verified after {verified:?}; peak RSS (VmHWM) controller {} KiB, \
         executor {} KiB",
        hwm(&controller),
        hwm(&executor)
    );
}

// ===========================================================================
// The runner fork server (docs/work.md §4)
// ===========================================================================

const SERVER_FLAG: &str = "--command-runner-server";

/// The parent PID of `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Processes whose parent is `pid`, zombies among them.
fn all_children_of(pid: u32) -> impl Iterator<Item = u32> {
    let entries = std::fs::read_dir("/proc").expect("read /proc");
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&p| parent_of(p) == pid)
}

/// Live (not zombie) processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    all_children_of(pid).filter(|&p| alive(p)).collect()
}

/// `daemon` has one fork server, and not `old`.
fn assert_one_new_fork_server(daemon: u32, old: u32) {
    let servers: Vec<u32> = children_of(daemon)
        .into_iter()
        .filter(|&p| is_fork_server(p))
        .collect();
    assert_eq!(servers.len(), 1, "fork servers {servers:?}");
    assert_ne!(servers[0], old);
}

fn is_fork_server(pid: u32) -> bool {
    cmdline(pid).split_whitespace().any(|a| a == SERVER_FLAG)
}

/// The fork server of the runner with PID `runner`, checked to be one.
fn server_of(runner: u32) -> u32 {
    let server = parent_of(runner);
    assert!(
        is_fork_server(server),
        "runner {runner}'s parent {server} is no fork server: {}",
        cmdline(server)
    );
    server
}

/// A lone node (a listener, so it has something to run) with `types`.
fn lone_node(types: &[String]) -> Node {
    let mut items = vec![listener(free_port(), 1.0)];
    items.extend_from_slice(types);
    Node::start("lone", &items)
}

fn runner_pid(status: &Value) -> u32 {
    status["ExtraData"]["Pid"].as_u64().expect("runner Pid") as u32
}

/// Waits until the unit runs and its runner's PID is recorded.
fn wait_running(node: &Node, id: &str) -> Value {
    wait_status(node, id, secs(10), "running with a runner PID", |v| {
        state(v) == 1 && v["ExtraData"]["Pid"].as_u64().is_some()
    })
}

/// `gate`: prints `before`, waits until `file` exists, prints `after`;
/// it runs as long as a test needs, however slow the machine.
fn gate_type(file: &Path) -> String {
    let file = file.display();
    let script = format!("echo before; while [ ! -e {file} ]; do sleep 0.05; done; echo after");
    work_type("gate", "sh", &format!("-c '{script}'"), false)
}

#[test]
fn forked_runner_survives_daemon_sigkill_and_the_restarted_daemon_finds_it() {
    let tmp = TempDir::new("gate");
    let gate = tmp.path.join("open");
    let mut node = lone_node(&[gate_type(&gate)]);
    let daemon = node.daemon_pid().expect("running");
    assert_eq!(children_of(daemon), Vec::<u32>::new(), "an idle node forks");

    let id = submit_raw(&node.socket, "lone", "gate", &[], b"")
        .expect("submit")
        .id;
    let st = wait_running(&node, &id);
    let runner = runner_pid(&st);
    let server = server_of(runner);
    assert_eq!(parent_of(server), daemon);
    assert_eq!(
        cmdline(runner),
        cmdline(server),
        "runner {runner} was exec'd"
    );
    let unit_dir = node.units_dir().join(&id);
    assert_eq!(
        std::fs::read_link(format!("/proc/{runner}/cwd")).expect("runner cwd"),
        unit_dir.canonicalize().expect("unit dir")
    );

    node.kill();
    assert!(
        wait_until(secs(5), || !alive(server)),
        "the fork server outlived its daemon"
    );
    assert!(alive(runner), "runner {runner} died with the daemon");

    node.restart();
    // Recognized as this unit's runner, not taken for a reused PID.
    let resumed = format!("Resuming watch of command runner PID {runner}");
    assert!(
        wait_until(secs(10), || node.log().contains(&resumed)),
        "{}",
        node.log_tail(20)
    );
    std::fs::write(&gate, "").expect("open the gate");
    let st = wait_state(&node, &id, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    assert_eq!(
        std::fs::read_to_string(unit_dir.join("stdout")).expect("stdout"),
        "before\nafter\n"
    );
}

#[test]
fn fork_server_death_loses_no_unit_and_the_next_start_gets_a_new_server() {
    let tmp = TempDir::new("gate");
    let gate = tmp.path.join("open");
    let node = lone_node(&[gate_type(&gate), work_type("where", "pwd", "", false)]);
    let daemon = node.daemon_pid().expect("running");
    let first = submit_raw(&node.socket, "lone", "gate", &[], b"")
        .expect("submit")
        .id;
    let st = wait_running(&node, &first);
    let runner = runner_pid(&st);
    let server = server_of(runner);

    kill9(server as i32);
    assert!(wait_until(secs(5), || !alive(server)), "server survived");
    assert!(alive(runner), "runner {runner} died with the fork server");
    std::fs::write(&gate, "").expect("open the gate");
    let st = wait_state(&node, &first, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    assert_eq!(results_text(&node, &first, secs(10)), "before\nafter\n");

    // A new server; the command still runs in the daemon's directory.
    let next = submit_raw(&node.socket, "lone", "where", &[], b"")
        .expect("submit")
        .id;
    let st = wait_state(&node, &next, 2, secs(10));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    let cwd = std::fs::read_link(format!("/proc/{daemon}/cwd")).expect("daemon cwd");
    assert_eq!(
        results_text(&node, &next, secs(10)),
        format!("{}\n", cwd.display())
    );
    assert_one_new_fork_server(daemon, server);
}

#[test]
fn cancel_and_release_reach_a_forked_runner() {
    let node = lone_node(&[work_type("nap", "sleep", "30", false)]);
    let id = submit_raw(&node.socket, "lone", "nap", &[], b"")
        .expect("submit")
        .id;
    let st = wait_running(&node, &id);
    let runner = runner_pid(&st);
    let command = detail_pid(&st);
    server_of(runner);
    // The server blocks SIGCHLD for its signalfd; a runner must not keep
    // that mask.
    assert_signals_reach(runner);
    assert_signals_reach(command);

    let out = node.ctl(&["work", "cancel", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(secs(5), || !alive(runner) && !alive(command)),
        "runner {runner} or command {command} outlived the cancel"
    );
    let st = status_of(&node, &id);
    assert_eq!((state(&st), st["Detail"].as_str()), (4, Some("Canceled")));

    let out = node.ctl(&["work", "release", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!node.units_dir().join(&id).exists(), "unit dir left behind");
}

/// `pid` blocks no signal and ignores none of those a runner waits for
/// (an ignored signal stays ignored across exec, into the command).
fn assert_signals_reach(pid: u32) {
    assert_eq!(signal_set(pid, "SigBlk"), "0000000000000000", "PID {pid}");
    let ignored = u64::from_str_radix(&signal_set(pid, "SigIgn"), 16).expect("SigIgn");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
        assert_eq!(ignored & 1 << (sig - 1), 0, "PID {pid} ignores {sig}");
    }
}

/// A signal set of `pid` from /proc/PID/status (`SigBlk`: its mask,
/// `SigIgn`: what it ignores), in hex.
fn signal_set(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// A unit directory with `stdin` and a fresh status, for a runner run
/// by hand.
fn hand_unit(dir: &Path, stdin: &str) -> PathBuf {
    let unit = dir.join("unit");
    std::fs::create_dir_all(&unit).expect("unit dir");
    std::fs::write(unit.join("stdin"), stdin).expect("stdin");
    let status = r#"{"State":0,"Detail":"","StdoutSize":0,"WorkType":"t","ExtraData":null}"#;
    std::fs::write(unit.join("status"), status).expect("status");
    unit
}

fn execd_runner(unit: &Path, command: &str, params: &str) -> std::process::Child {
    Command::new(common::RECEPTOR)
        .args([
            "--node",
            "id=worker",
            "--log-level",
            "error",
            "--command-runner",
        ])
        .arg(format!("command={command}"))
        .arg(format!("params={params}"))
        .arg(format!("unitdir={}", unit.display()))
        .spawn()
        .expect("spawn runner")
}

fn hand_status(unit: &Path) -> Value {
    let text = std::fs::read_to_string(unit.join("status")).expect("status");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The exec'd runner (the fallback when no fork server can make one)
/// runs in one thread; its signal handling is its own wait loop.
#[test]
fn execd_runner_runs_a_unit_and_stops_its_command_on_sigterm() {
    let tmp = TempDir::new("runner");
    let unit = hand_unit(&tmp.path.join("a"), "hello\n");
    let code = execd_runner(&unit, "cat", "").wait().expect("wait");
    assert_eq!(code.code(), Some(0));
    let st = hand_status(&unit);
    assert_eq!(
        (state(&st), st["Detail"].as_str()),
        (2, Some("exit status 0"))
    );
    assert_eq!(
        std::fs::read_to_string(unit.join("stdout")).unwrap(),
        "hello\n"
    );

    let unit = hand_unit(&tmp.path.join("b"), "");
    let mut runner = execd_runner(&unit, "sleep", "30");
    assert!(
        wait_until(secs(10), || state(&hand_status(&unit)) == 1),
        "{}",
        hand_status(&unit)
    );
    assert_eq!(
        std::fs::read_dir(format!("/proc/{}/task", runner.id()))
            .expect("runner tasks")
            .count(),
        1,
        "the runner has helper threads"
    );
    let command = detail_pid(&hand_status(&unit));
    assert_signals_reach(runner.id());
    assert_signals_reach(command);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(runner.id() as i32, libc::SIGTERM);
    }
    assert_eq!(runner.wait().expect("wait").code(), Some(255));
    assert!(
        wait_until(secs(5), || !alive(command)),
        "sleep outlived its runner"
    );
    let st = hand_status(&unit);
    assert_eq!((state(&st), st["Detail"].as_str()), (3, Some("Killed")));
    assert_eq!(st["ExtraData"], Value::Null);
}

/// A runner whose unit the daemon already gave up (a start it failed when
/// the fork server's answer was lost) must not run the command, nor
/// write over the daemon's verdict.
#[test]
fn a_runner_leaves_a_unit_that_is_already_final_alone() {
    let tmp = TempDir::new("runner-final");
    let unit = hand_unit(&tmp.path.join("a"), "");
    let failed = r#"{"State":3,"Detail":"Error starting worker: gone","StdoutSize":0,"WorkType":"t","ExtraData":null}"#;
    std::fs::write(unit.join("status"), failed).expect("status");
    let marker = tmp.path.join("ran");
    let code = execd_runner(&unit, "touch", &marker.display().to_string())
        .wait()
        .expect("wait");
    assert_ne!(code.code(), Some(0));
    assert!(!marker.exists(), "the command ran");
    let st = hand_status(&unit);
    assert_eq!(
        (state(&st), st["Detail"].as_str()),
        (3, Some("Error starting worker: gone"))
    );
}

/// The runner names itself in the status before its command exists, so
/// a daemon that lost the fork server's answer can still find it.
#[test]
fn a_runner_records_its_own_pid() {
    let tmp = TempDir::new("runner-pid");
    let unit = hand_unit(&tmp.path.join("a"), "");
    let mut runner = execd_runner(&unit, "sleep", "30");
    assert!(
        wait_until(secs(10), || state(&hand_status(&unit)) == 1),
        "{}",
        hand_status(&unit)
    );
    assert_eq!(runner_pid(&hand_status(&unit)), runner.id());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(runner.id() as i32, libc::SIGTERM);
    }
    let _ = runner.wait();
}

fn read_reply(replies: &mut impl BufRead) -> Value {
    let mut line = String::new();
    replies.read_line(&mut line).expect("reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// A forked runner that cannot enter its unit directory (the server's own
/// directory is gone, so there is no way back to it for the command)
/// execs itself as `--command-runner`, the runner a daemon knows by its
/// command line, so a cancel or a restarted daemon can still reach it.
#[test]
fn a_forked_runner_outside_its_unit_directory_becomes_the_execd_kind() {
    let tmp = TempDir::new("fork-cwd");
    let unit = hand_unit(&tmp.path.join("a"), "");
    let gone = tmp.path.join("gone");
    std::fs::create_dir(&gone).expect("dir");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut server = Command::new(common::RECEPTOR)
        .args(["--node", "id=worker", "--log-level", "error", SERVER_FLAG])
        .current_dir(&gone)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .spawn()
        .expect("spawn server");
    // A server that stops answering fails the test rather than hangs it.
    ours.set_read_timeout(Some(secs(30))).expect("timeout");
    let mut replies = BufReader::new(ours.try_clone().expect("clone"));
    assert_eq!(read_reply(&mut replies)["Ready"], server.id());
    std::fs::remove_dir(&gone).expect("remove the server's directory");
    let request = serde_json::json!({
        "command": "sleep",
        "params": "30",
        "unitdir": unit.display().to_string(),
    });
    (&ours)
        .write_all(format!("{request}\n").as_bytes())
        .expect("request");
    let started = read_reply(&mut replies);
    let runner = started["Started"].as_u64().expect("Started") as u32;
    let want = format!("unitdir={}", unit.display());
    let execd = |c: String| c.split(' ').any(|a| a == "--command-runner") && c.contains(&want);
    assert!(
        wait_until(secs(10), || execd(cmdline(runner))),
        "runner {runner}: {}",
        cmdline(runner)
    );
    assert!(
        wait_until(secs(10), || state(&hand_status(&unit)) == 1),
        "{}",
        hand_status(&unit)
    );
    kill_pid(runner, libc::SIGTERM);
    let exited = read_reply(&mut replies);
    assert_eq!(exited["Exited"], runner, "{exited}");
    let st = hand_status(&unit);
    assert_eq!((state(&st), st["Detail"].as_str()), (3, Some("Killed")));
    drop((ours, replies));
    let ended = wait_until(secs(10), || server.try_wait().expect("wait").is_some());
    if !ended {
        let _ = server.kill();
    }
    assert!(ended, "the server outlived its daemon's end");
    assert!(server.wait().expect("wait").success());
}

fn kill_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

// ===========================================================================
// The daemon as PID 1 (docs/work.md §4): orphans are reaped
// ===========================================================================

/// A wrapper that runs its arguments as PID 1 of new user, PID and mount
/// namespaces, with a /proc of its own as in a container; the wrapped
/// process is killed with `unshare`.
const AS_INIT: &str = "unshare --user --pid --fork --map-root-user --mount-proc --kill-child";

/// Zombies whose parent is `pid`.
fn zombies_of(pid: u32) -> Vec<u32> {
    all_children_of(pid)
        .filter(|&p| !alive(p) && Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

/// The PID of `pid` in its own (innermost) PID namespace.
fn inner_pid(pid: u32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no NSpid for {pid}"))
}

/// A node run by [`AS_INIT`]: `init` is the daemon, PID 1 inside.
struct InitNode {
    node: Node,
    init: u32,
}

impl Drop for InitNode {
    /// Kills the daemon, and with it all in its namespace, and waits for
    /// `unshare` to reap it before the node is killed and reaped: killed
    /// first, `unshare` would leave it a zombie of this machine's init.
    fn drop(&mut self) {
        kill9(self.init as i32);
        let gone = || !Path::new(&format!("/proc/{}", self.init)).exists();
        if !wait_until(secs(10), gone) {
            eprintln!("namespace init {} not reaped by unshare", self.init);
        }
        self.node.kill();
    }
}

#[test]
fn a_daemon_that_is_pid_1_reaps_orphans_and_keeps_its_own_children() {
    let probe = Command::new("sh")
        .args(["-c", &format!("{AS_INIT} true")])
        .output()
        .expect("sh");
    if !probe.status.success() {
        println!("skipped: no user and PID namespaces here: {}", show(&probe));
        return;
    }
    let tmp = TempDir::new("init");
    let wrapper = tmp.path.join("as-init");
    let script = format!("#!/bin/sh\nexec {AS_INIT} {} \"$@\"\n", common::RECEPTOR);
    std::fs::write(&wrapper, script).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // `left` leaves a process behind that waits for its gate: an orphan.
    let (gate, left_gate) = (tmp.path.join("open"), tmp.path.join("left"));
    let leaves = format!(
        "-c '(while [ ! -e {} ]; do sleep 0.05; done) & exit 0'",
        left_gate.display()
    );
    let items = [
        listener(free_port(), 1.0),
        gate_type(&gate),
        work_type("left", "sh", &leaves, false),
        work_type("where", "pwd", "", false),
    ];
    let node = Node::start_via(&wrapper, "init", &items);
    let unshare = node.daemon_pid().expect("running");
    let [daemon] = children_of(unshare)[..] else {
        panic!("unshare {unshare} has no one child");
    };
    let init = InitNode { node, init: daemon };
    let node = &init.node;
    assert_eq!(inner_pid(daemon), 1);
    assert!(
        node.log()
            .contains("Running as PID 1: reaping orphaned processes")
    );

    // A command's background process outlives it, adopted by the daemon.
    let id = submit_raw(&node.socket, "init", "left", &[], b"")
        .expect("submit")
        .id;
    let st = wait_state(node, &id, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    let is_orphan = |p: &u32| !is_fork_server(*p);
    let orphans: Vec<u32> = children_of(daemon).into_iter().filter(is_orphan).collect();
    assert_eq!(orphans.len(), 1, "children {:?}", children_of(daemon));
    std::fs::write(&left_gate, "").expect("open the orphan's gate");
    assert!(
        wait_until(secs(10), || !Path::new(&format!("/proc/{}", orphans[0]))
            .exists()),
        "orphan {} not reaped: zombies {:?}\n{}",
        orphans[0],
        zombies_of(daemon),
        node.log_tail(20)
    );

    // The fork server dies: the daemon, its owner, reaps it; its runner
    // is orphaned to the daemon and still finishes its unit.
    let first = submit_raw(&node.socket, "init", "gate", &[], b"")
        .expect("submit")
        .id;
    let runner_inner = runner_pid(&wait_running(node, &first));
    let server = children_of(daemon)
        .into_iter()
        .find(|&p| is_fork_server(p))
        .expect("a fork server");
    let [runner] = children_of(server)[..] else {
        panic!("fork server {server} has no one runner");
    };
    assert_eq!(inner_pid(runner), runner_inner);
    let server_inner = inner_pid(server);
    kill9(server as i32);
    assert!(
        wait_until(secs(10), || parent_of(runner) == daemon),
        "runner {runner} not adopted by the daemon"
    );
    std::fs::write(&gate, "").expect("open the gate");
    let st = wait_state(node, &first, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    assert_eq!(results_text(node, &first, secs(10)), "before\nafter\n");
    let reaped = format!("Reaped orphaned process {runner_inner} (");
    assert!(
        wait_until(secs(10), || node.log().contains(&reaped)),
        "{}",
        node.log_tail(20)
    );
    // The server's own thread logs its exit when it gets to it.
    let exited = format!("Runner fork server (PID {server_inner}) has exited");
    assert!(
        wait_until(secs(10), || node.log().contains(&exited)),
        "{}",
        node.log_tail(20)
    );
    let log = node.log();
    assert!(
        !log.contains(&format!("Reaped orphaned process {server_inner} (")),
        "the reaper took the fork server's exit\n{}",
        node.log_tail(20)
    );

    // The daemon's next child, a new fork server, runs units as before.
    let next = submit_raw(&node.socket, "init", "where", &[], b"")
        .expect("submit")
        .id;
    let st = wait_state(node, &next, 2, secs(30));
    assert_eq!(st["Detail"], "exit status 0", "{st}");
    assert_one_new_fork_server(daemon, server);
    assert!(
        wait_until(secs(10), || zombies_of(daemon).is_empty()),
        "zombies {:?} under the daemon\n{}",
        zombies_of(daemon),
        node.log_tail(20)
    );
}
