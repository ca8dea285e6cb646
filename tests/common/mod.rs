//! Integration-test harness: receptor nodes in temp dirs, the real
//! `receptorctl` client, raw control-socket connections, polling helpers.
//! Everything listens on 127.0.0.1 only.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod pki;

/// The daemon under test.
pub const RECEPTOR: &str = env!("CARGO_BIN_EXE_receptor");

/// How long a node may take to open its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Upper bound for one receptorctl or receptor invocation.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `cond` every 50 ms until it is true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Shorthand for `Duration::from_secs`.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A currently free port on 127.0.0.1 (bind port 0, read it, drop the socket).
/// Ports already handed out by this process are never handed out again.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// True if something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A fresh directory under the system temp dir, unique per call. It is
/// removed on drop, unless the thread is panicking (a failing test keeps it
/// for inspection and prints its path).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        // Short: the control socket path inside must fit in sun_path (108 bytes).
        let path = std::env::temp_dir().join(format!("rcpt-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// YAML item: a TCP listener on 127.0.0.1:`port` with link cost `cost`.
pub fn listener(port: u16, cost: f64) -> String {
    format!("- tcp-listener: {{bindaddr: 127.0.0.1, port: {port}, cost: {cost:?}}}")
}

/// YAML item: a TCP peer dialing 127.0.0.1:`port` with link cost `cost`.
pub fn peer(port: u16, cost: f64) -> String {
    format!("- tcp-peer: {{address: \"127.0.0.1:{port}\", cost: {cost:?}}}")
}

/// YAML item: a UDP listener on 127.0.0.1:`port`.
pub fn udp_listener(port: u16) -> String {
    format!("- udp-listener: {{bindaddr: 127.0.0.1, port: {port}}}")
}

/// YAML item: a UDP peer sending to 127.0.0.1:`port`.
pub fn udp_peer(port: u16) -> String {
    format!("- udp-peer: {{address: \"127.0.0.1:{port}\"}}")
}

/// A UDP port nobody is bound to right now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// One receptor process with its own temp dir, YAML config, control socket
/// and log file (stdout+stderr). Dropping it SIGKILLs the process.
pub struct Node {
    pub id: String,
    pub socket: PathBuf,
    /// The daemon binary: ours, or the Go reference.
    binary: PathBuf,
    config: PathBuf,
    /// The config's node, log-level and control-service items.
    header: String,
    log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
    /// Extra environment of the process.
    env: Vec<(String, String)>,
    /// The config is a v2 file (`--config-v2 --config FILE`).
    v2: bool,
}

impl Node {
    /// Writes the config (node id and datadir, debug logging, a Unix control
    /// socket, then the YAML `items`), starts the node and waits until its
    /// control socket answers.
    pub fn start(id: &str, items: &[String]) -> Node {
        let mut node = Node::spawn(id, items);
        node.wait_ready();
        node
    }

    /// Like [`Node::start`] but does not wait for the control socket.
    pub fn spawn(id: &str, items: &[String]) -> Node {
        Node::spawn_with(id, "", items)
    }

    /// Like [`Node::start`], with more keys for the `node` directive
    /// (YAML lines indented by four spaces, e.g. `    firewallrules: [...]`).
    pub fn start_with(id: &str, node_keys: &str, items: &[String]) -> Node {
        Node::start_full(id, node_keys, "", items)
    }

    /// Like [`Node::start_with`], with more keys for the harness's own
    /// `control-service` (four-space indented lines, e.g. `    tls: srv`).
    pub fn start_full(id: &str, node_keys: &str, control_keys: &str, items: &[String]) -> Node {
        let mut node = Node::spawn_full(Path::new(RECEPTOR), id, node_keys, control_keys, items);
        node.wait_ready();
        node
    }

    fn spawn_with(id: &str, node_keys: &str, items: &[String]) -> Node {
        Node::spawn_full(Path::new(RECEPTOR), id, node_keys, "", items)
    }

    fn spawn_full(
        binary: &Path,
        id: &str,
        node_keys: &str,
        control_keys: &str,
        items: &[String],
    ) -> Node {
        let dir = TempDir::new(id);
        let socket = dir.path.join("ctl.sock");
        let config = dir.path.join("receptor.yaml");
        let mut yaml = format!(
            "- node:\n    id: {id}\n    datadir: {:?}\n{node_keys}\n- log-level: debug\n\
             - control-service:\n    service: control\n    filename: {:?}\n{control_keys}\n",
            dir.path.join("data"),
            socket,
        );
        let header = yaml.clone();
        for item in items {
            yaml.push_str(item);
            yaml.push('\n');
        }
        std::fs::write(&config, yaml).expect("write config");
        Node::launched(binary, id, dir, config, header, false)
    }

    /// Starts `binary` on `config` (written in `dir`, with the control
    /// socket `dir/ctl.sock`); does not wait for the socket. `header` is
    /// the config's text before the test's own items.
    fn launched(
        binary: &Path,
        id: &str,
        dir: TempDir,
        config: PathBuf,
        header: String,
        v2: bool,
    ) -> Node {
        let mut node = Node {
            id: id.to_string(),
            socket: dir.path.join("ctl.sock"),
            config,
            header,
            log_path: dir.path.join("receptor.log"),
            child: None,
            dir,
            binary: binary.to_path_buf(),
            env: Vec::new(),
            v2,
        };
        node.launch();
        node
    }

    /// Like [`Node::start`] with a v2 config file: node id and datadir,
    /// debug logging and the Unix control socket, then `sections` (more
    /// top-level YAML keys, e.g. `tcp-listeners:\n  - port: 7323\n`).
    pub fn start_v2(id: &str, sections: &str) -> Node {
        Node::start_v2_with(Path::new(RECEPTOR), id, sections)
    }

    /// Like [`Node::start_v2`], running the daemon `binary` (ours or Go's).
    pub fn start_v2_with(binary: &Path, id: &str, sections: &str) -> Node {
        let dir = TempDir::new(id);
        let socket = dir.path.join("ctl.sock");
        let config = dir.path.join("receptor-v2.yaml");
        let head = format!(
            "node:\n  id: {id}\n  datadir: {:?}\nlog-level:\n  level: debug\n\
             control-services:\n  - service: control\n    filename: {:?}\n",
            dir.path.join("data"),
            socket,
        );
        std::fs::write(&config, format!("{head}{sections}")).expect("write config");
        let mut node = Node::launched(binary, id, dir, config, head, true);
        node.wait_ready();
        node
    }

    /// Like [`Node::start`], running the Go reference daemon `go` instead.
    pub fn start_go(go: &Path, id: &str, items: &[String]) -> Node {
        let mut node = Node::spawn_full(go, id, "", "", items);
        node.wait_ready();
        node
    }

    /// Like [`Node::start`], running `program`, which execs the daemon
    /// with the arguments it is given (a wrapper such as `unshare`).
    pub fn start_via(program: &Path, id: &str, items: &[String]) -> Node {
        let mut node = Node::spawn_full(program, id, "", "", items);
        node.wait_ready();
        node
    }

    /// Like [`Node::start`], with extra environment variables.
    pub fn start_env(id: &str, items: &[String], env: &[(&str, &str)]) -> Node {
        let mut node = Node::spawn(id, items);
        node.kill();
        node.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        node.launch();
        node.wait_ready();
        node
    }

    /// Rewrites the config file with the same node, log-level and control
    /// items and these `items` (for a reload).
    pub fn set_items(&self, items: &[String]) {
        let mut yaml = self.header.clone();
        for item in items {
            yaml.push_str(item);
            yaml.push('\n');
        }
        self.set_config(&yaml);
    }

    /// The config's node, log-level and control-service items.
    pub fn config_head(&self) -> &str {
        &self.header
    }

    /// Replaces the whole config file.
    pub fn set_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write config");
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("not running");
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
    }

    /// The node's own temp directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let config_flags: &[&str] = if self.v2 {
            &["--config-v2", "--config"]
        } else {
            &["-c"]
        };
        let child = Command::new(&self.binary)
            .args(config_flags)
            .arg(&self.config)
            .current_dir(&self.dir.path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn receptor");
        self.child = Some(child);
    }

    /// Waits until the control socket accepts a connection and greets us;
    /// panics (with the log) if the process exits or the wait times out.
    pub fn wait_ready(&mut self) {
        let ok = wait_until(READY_TIMEOUT, || {
            self.assert_alive();
            let Ok(s) = UnixStream::connect(&self.socket) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).is_ok()
                && line.starts_with("Receptor Control, node ")
        });
        assert!(
            ok,
            "{}: control socket not ready\n{}",
            self.id,
            self.log_tail(40)
        );
    }

    /// Panics with the log if the process has exited.
    fn assert_alive(&mut self) {
        let alive = self.is_running();
        assert!(alive, "{} is not running\n{}", self.id, self.log_tail(40));
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the process (a crash) and reaps it; files are kept.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 10 s) for the process to exit;
    /// returns its exit status, or `None` if it did not stop in time.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let mut status = None;
        wait_until(secs(10), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// Kills the process if needed and starts it again with the same config,
    /// waiting until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }

    /// The whole log so far (all runs of this node).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` log lines, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- last log lines of {} ---\n{}",
            self.id,
            lines[start..].join("\n")
        )
    }

    /// Runs `receptorctl --socket <this node's socket> args...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(receptorctl());
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.env_remove("RECEPTORCTL_SOCKET");
        output_within(cmd, CMD_TIMEOUT)
    }

    /// Runs `receptorctl --socket <this node's socket> args...` with
    /// `input` on its stdin.
    pub fn ctl_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = Command::new(receptorctl());
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.env_remove("RECEPTORCTL_SOCKET");
        output_with_input(cmd, Some(input), CMD_TIMEOUT)
    }

    /// Submits `payload` to the `echo` work type (configured as `cat`) on
    /// `to` and returns its results (`-f` follows them to the end); panics
    /// if receptorctl fails.
    pub fn submit_echo(&self, to: &str, payload: &[u8]) -> Vec<u8> {
        let out = self.ctl_with_input(
            &["work", "submit", "echo", "--node", to, "-f", "-p", "-"],
            payload,
        );
        assert!(out.status.success(), "{} -> {to}: {}", self.id, show(&out));
        out.stdout
    }

    /// `receptorctl status --json`, parsed; panics if it fails.
    pub fn ctl_status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}: receptorctl status failed: {}",
            self.id,
            show(&out)
        );
        serde_json::from_slice(&out.stdout).expect("status --json output is JSON")
    }

    /// Opens a raw control connection (greeting already read).
    pub fn connect(&self) -> Conn {
        Conn::open(&self.socket).0
    }

    /// Full `status` over a raw connection (cheaper than receptorctl for polling).
    pub fn status(&self) -> Value {
        let reply = self.connect().cmd("status");
        serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("{}: status reply {reply:?} is not JSON: {e}", self.id))
    }

    /// IDs of this node's established connections, sorted.
    pub fn connections(&self) -> Vec<String> {
        connection_ids(&self.status())
    }

    /// This node's next hop towards `dest`, if it has a route.
    pub fn route(&self, dest: &str) -> Option<String> {
        route(&self.status(), dest)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let died = self.child.is_some() && !self.is_running();
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(20));
        } else if died {
            panic!("{} exited during the test\n{}", self.id, self.log_tail(40));
        }
    }
}

/// The next hop towards `dest` in a status object's RoutingTable.
pub fn route(status: &Value, dest: &str) -> Option<String> {
    status["RoutingTable"][dest].as_str().map(str::to_string)
}

/// Sorted NodeIDs of a status object's Connections.
pub fn connection_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["Connections"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["NodeID"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The node names of `receptorctl traceroute` run on `node`, hop by hop.
pub fn traceroute_hops(node: &Node, target: &str) -> Vec<String> {
    let out = node.ctl(&["traceroute", target]);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or_default().to_string())
        .collect()
}

/// The Go reference daemon, unpacked by tests/run.sh when the workspace
/// has it; `None` (after saying "skipped") when it does not.
pub fn go_reference() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reference/receptor-go");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: no Go reference");
        None
    }
}

/// Path of the receptorctl 1.6.9 executable, from $RECEPTORCTL.
pub fn receptorctl() -> String {
    std::env::var("RECEPTORCTL").unwrap_or_else(|_| {
        panic!(
            "RECEPTORCTL is not set. Run the suite with tests/run.sh, which installs \
             receptorctl 1.6.9 into target/receptorctl-venv and sets RECEPTORCTL."
        )
    })
}

/// Runs `cmd` with no stdin, capturing stdout and stderr; SIGKILLs it and
/// panics if it runs longer than `timeout`.
pub fn output_within(cmd: Command, timeout: Duration) -> Output {
    output_with_input(cmd, None, timeout)
}

/// As `output_within`, feeding `input` (if any) to the command's stdin.
pub fn output_with_input(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let feeder = child.stdin.take().zip(input).map(|(mut stdin, input)| {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        })
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Exit code, stdout and stderr of a finished command, for assert messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout then stderr, for checking a message wherever it was printed.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The unit ID receptorctl printed after a submit (`Unit ID: <id>`).
pub fn unit_id(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .unwrap_or_else(|| panic!("no unit ID: {}", show(out)))
        .trim()
        .to_string()
}

/// Items for an executor that checks signatures with `public_key`: its
/// `work-verification` and an `echo` (cat) type with `verifysignature`.
pub fn verifying_echo(public_key: &Path) -> [String; 2] {
    [
        format!("- work-verification:\n    publickey: {public_key:?}"),
        "- work-command:\n    worktype: echo\n    command: cat\n    verifysignature: true".into(),
    ]
}

/// True for a Go `Duration.String()` such as `0s`, `12.5µs`, `1.234567ms`,
/// `2m3.5s` (numbers without trailing fractional zeros, Go units).
pub fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..n];
        let well_formed = match num.split_once('.') {
            None => !num.is_empty(),
            Some((int, frac)) => {
                !int.is_empty() && !frac.is_empty() && !frac.contains('.') && !frac.ends_with('0')
            }
        };
        if !well_formed {
            return false;
        }
        rest = &rest[n..];
        let Some(unit) = ["ns", "µs", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    !s.is_empty()
}

/// A raw client connection to a control socket.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    /// Connects, reads the greeting line, returns both. Reads time out
    /// after 20 s (longer than the daemon's 10 s ping timeout).
    pub fn open(socket: &Path) -> (Conn, String) {
        let s = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set timeout");
        let mut conn = Conn {
            writer: s.try_clone().expect("clone socket"),
            reader: BufReader::new(s),
        };
        let greeting = conn.raw_line();
        (conn, greeting)
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to control socket");
    }

    /// Reads one line including its `\n`; panics on EOF or timeout.
    pub fn raw_line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(_) if buf.ends_with(b"\n") => String::from_utf8(buf).expect("reply is UTF-8"),
            Ok(_) => panic!(
                "control socket closed; partial line {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(e) => panic!(
                "reading control socket: {e}; partial {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }

    /// Reads one line without its `\n`.
    pub fn line(&mut self) -> String {
        let mut l = self.raw_line();
        l.pop();
        l
    }

    /// Sends `command` + `\n` and returns the one reply line (without `\n`).
    pub fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\n").as_bytes());
        self.line()
    }

    /// Shuts down our write side (the server sees EOF).
    pub fn half_close(&self) {
        self.writer
            .shutdown(Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }

    /// Reads until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.reader.read_to_end(&mut buf).expect("read until EOF");
        buf
    }

    /// Sets how long reads wait before failing.
    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).expect("set timeout");
    }
}

// ---------------------------------------------------------------------------
// Added for tests/work.rs: a node's daemon PID and its work-unit directory.
// ---------------------------------------------------------------------------

impl Node {
    /// PID of the daemon process while it runs (for /proc inspection).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `<datadir>/<node id>`: the directory holding this node's unit dirs.
    pub fn units_dir(&self) -> PathBuf {
        self.dir.path.join("data").join(&self.id)
    }

    /// The node's datadir (`<temp dir>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path.join("data")
    }
}

/// Deterministic pseudo-random bytes (splitmix64, 8 bytes per step), so any
/// prefix of a stream can be regenerated from its seed.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        receptor::random::splitmix64(&mut self.0)
    }

    /// Fills `buf`; its length must be a multiple of 8.
    pub fn fill(&mut self, buf: &mut [u8]) {
        assert_eq!(buf.len() % 8, 0, "Gen::fill needs a multiple of 8");
        for chunk in buf.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
    }

    /// The first `len` bytes of the stream for `seed` (len multiple of 8).
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        Gen::new(seed).fill(&mut v);
        v
    }
}
