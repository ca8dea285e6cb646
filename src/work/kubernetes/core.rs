//! The Kubernetes request steps with no I/O (docs/kubernetes.md §5): the
//! pod to create, what a watch event means, how a resumed log stream
//! lines up with what was already written, and how the worker ended.
//! Time comes in as `now`; the shell in `run.rs` does the requests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::work::shlex;

/// The one container whose stdin, log and exit code are the unit's.
pub const WORKER: &str = "worker";

/// The pod to `POST`, and the namespace it goes to when the user's pod
/// names one.
pub fn build_pod(
    work_type: &str,
    image: &str,
    command: &str,
    params: &str,
    user_pod: &str,
) -> Result<(Value, Option<String>), String> {
    if !user_pod.is_empty() {
        let mut pod: Value =
            serde_yaml::from_str(user_pod).map_err(|e| format!("could not parse pod spec: {e}"))?;
        if !pod.is_object() {
            return Err("could not parse pod spec: not an object".into());
        }
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let prefix = if name.is_empty() {
            format!("{}-", work_type.to_lowercase())
        } else {
            format!("{name}-")
        };
        let meta = pod
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        if let Some(Value::Object(m)) = meta {
            m.remove("name");
            m.insert("generateName".into(), Value::String(prefix));
        }
        let containers = pod
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut);
        let worker = containers.and_then(|cs| {
            cs.iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(WORKER))
        });
        let Some(Value::Object(worker)) = worker else {
            return Err("at least one container must be named worker".into());
        };
        worker.insert("stdin".into(), Value::Bool(true));
        worker.insert("stdinOnce".into(), Value::Bool(true));
        if let Some(Value::Object(spec)) = pod.get_mut("spec") {
            spec.insert("restartPolicy".into(), Value::String("Never".into()));
        }
        return Ok((pod, ns));
    }
    let split = |what: &str, s: &str| {
        shlex::split(s).map_err(|e| format!("could not split {what} {s:?}: {e}"))
    };
    let mut worker = json!({
        "name": WORKER,
        "image": image,
        "stdin": true,
        "stdinOnce": true,
        "tty": false,
    });
    if !command.is_empty() {
        worker["command"] = json!(split("command", command)?);
    }
    if !params.is_empty() {
        worker["args"] = json!(split("params", params)?);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": format!("{}-", work_type.to_lowercase())},
        "spec": {"containers": [worker], "restartPolicy": "Never"},
    });
    Ok((pod, None))
}

/// How waiting for the pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitEnd {
    /// Ready: attach and stream.
    Ready,
    /// It already ran to completion (Go's `ErrPodCompleted`).
    Completed,
    /// The error text (Go's wording), before the waiting reason is added.
    Failed(String),
}

pub const POD_FAILED: &str = "pod failed to start";
pub const POD_COMPLETED: &str = "pod ran to completion";
pub const PULL_BACK_OFF: &str = "container failed to start";
pub const WAIT_TIMEOUT: &str = "timed out waiting for the condition";
pub const POD_DELETED: &str = "pods \"\" not found";

/// Go's `podRunningAndReady` with `pod_pending_timeout`: fed watch events
/// (`handle_event`) and the clock (`handle_timeout`), in any order; the
/// first `Some` ends the wait.
#[derive(Debug)]
pub struct PodWait {
    deadline: Option<Instant>,
    /// ImagePullBackOff sightings still tolerated (Go: fails on the 4th).
    backoff_left: u32,
}

impl PodWait {
    pub fn new(now: Instant, pending_timeout: Option<Duration>) -> PodWait {
        PodWait {
            deadline: pending_timeout.map(|d| now + d),
            backoff_left: 3,
        }
    }

    /// When `handle_timeout` must be called at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<WaitEnd> {
        match self.deadline {
            Some(d) if now >= d => Some(WaitEnd::Failed(WAIT_TIMEOUT.into())),
            _ => None,
        }
    }

    /// One list item or watch event (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn handle_event(&mut self, kind: &str, pod: &Value) -> Option<WaitEnd> {
        if kind == "DELETED" {
            return Some(WaitEnd::Failed(POD_DELETED.into()));
        }
        match pod.pointer("/status/phase").and_then(Value::as_str) {
            Some("Failed") => return Some(WaitEnd::Failed(POD_FAILED.into())),
            Some("Succeeded") => return Some(WaitEnd::Completed),
            Some("Running" | "Pending") => {}
            _ => return None,
        }
        let conditions = pod.pointer("/status/conditions")?.as_array()?;
        for c in conditions {
            let (ty, status) = (str_at(c, "/type"), str_at(c, "/status"));
            if ty == "Ready" && status == "True" {
                return Some(WaitEnd::Ready);
            }
            if ty == "ContainersReady" && status == "False" {
                for cs in array_at(pod, "/status/containerStatuses") {
                    if str_at(cs, "/state/waiting/reason") == "ImagePullBackOff" {
                        if self.backoff_left == 0 {
                            return Some(WaitEnd::Failed(PULL_BACK_OFF.into()));
                        }
                        self.backoff_left -= 1;
                    }
                }
            }
        }
        None
    }
}

/// The next request of a wait: list (at first and after a watch lost its
/// place), or watch from a resourceVersion, for at most `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitRequest {
    List,
    Watch {
        resource_version: String,
        timeout: Option<Duration>,
    },
}

/// After one watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStep {
    /// Read the next event.
    Next,
    /// Drop this watch and list again (an `ERROR` event, e.g. 410 Gone).
    Relist,
    End(WaitEnd),
}

/// Go's list-then-watch (`UntilWithSync`) as request steps: `poll_request`
/// says what to ask next; the answers come back through `handle_list`,
/// `handle_event` and `handle_watch_broken`; `handle_timeout` with `now`.
#[derive(Debug)]
pub struct PodWatch {
    wait: PodWait,
    resource_version: String,
    last_pod: Value,
}

impl PodWatch {
    pub fn new(now: Instant, pending_timeout: Option<Duration>) -> PodWatch {
        PodWatch {
            wait: PodWait::new(now, pending_timeout),
            resource_version: String::new(),
            last_pod: Value::Null,
        }
    }

    pub fn poll_request(&self, now: Instant) -> WaitRequest {
        if self.resource_version.is_empty() {
            return WaitRequest::List;
        }
        WaitRequest::Watch {
            resource_version: self.resource_version.clone(),
            timeout: self
                .wait
                .poll_timeout()
                .map(|d| d.saturating_duration_since(now)),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<WaitEnd> {
        self.wait.handle_timeout(now)
    }

    /// A `PodList`.
    pub fn handle_list(&mut self, list: &Value) -> Option<WaitEnd> {
        self.resource_version = str_at(list, "/metadata/resourceVersion").to_string();
        for item in array_at(list, "/items") {
            self.last_pod = item.clone();
            if let Some(end) = self.wait.handle_event("ADDED", item) {
                return Some(end);
            }
        }
        None
    }

    /// One watch event, `{"type": …, "object": …}`.
    pub fn handle_event(&mut self, event: &Value) -> WatchStep {
        let kind = str_at(event, "/type");
        if kind == "ERROR" {
            self.resource_version.clear();
            return WatchStep::Relist;
        }
        let object = &event["object"];
        let rv = str_at(object, "/metadata/resourceVersion");
        if !rv.is_empty() {
            self.resource_version = rv.to_string();
        }
        self.last_pod = object.clone();
        match self.wait.handle_event(kind, object) {
            Some(end) => WatchStep::End(end),
            None => WatchStep::Next,
        }
    }

    /// The watch could not be opened: list again next time. (A stream that
    /// merely ended is watched again from the same resourceVersion.)
    pub fn handle_watch_refused(&mut self) {
        self.resource_version.clear();
    }

    /// The pod as last seen.
    pub fn last_pod(&self) -> &Value {
        &self.last_pod
    }
}

/// What Go adds to a failed wait: the worker's waiting reason, or its
/// exit code and message.
pub fn failure_detail(err: &str, pod: &Value) -> String {
    let statuses = array_at(pod, "/status/containerStatuses");
    let worker = if statuses.len() == 1 {
        statuses.first()
    } else {
        statuses.iter().find(|c| str_at(c, "/name") == WORKER)
    };
    if let Some(cs) = worker {
        let reason = str_at(cs, "/state/waiting/reason");
        if cs.pointer("/state/waiting").is_some() {
            return format!("{err}, {reason}");
        }
        if let Some((code, msg)) = terminated(cs).filter(|(c, _)| *c != 0) {
            return format!("{err}, exit code {code}: {msg}");
        }
    }
    err.to_string()
}

/// The worker container's exit code and message once it has terminated.
pub fn worker_exit(pod: &Value) -> Option<(i64, String)> {
    array_at(pod, "/status/containerStatuses")
        .iter()
        .find(|c| str_at(c, "/name") == WORKER)
        .and_then(terminated)
}

fn terminated(cs: &Value) -> Option<(i64, String)> {
    let t = cs.pointer("/state/terminated")?;
    let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
    Some((code, str_at(t, "/message").to_string()))
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn array_at<'a>(v: &'a Value, p: &str) -> &'a [Value] {
    v.pointer(p)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether the server's log endpoint resumes correctly with `sinceTime`
/// (Go's cut-off: 1.23.14, 1.24.8, 1.25.4, or any 1.26+).
pub fn supports_reconnect(git_version: &str) -> bool {
    let v = git_version.trim_start_matches('v');
    let v = v.split(['-', '+']).next().unwrap_or("");
    let mut nums = v.split('.').map(|n| n.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (nums.next(), nums.next()) else {
        return false;
    };
    let patch = nums.next().flatten().unwrap_or(0);
    match (major, minor) {
        (1, 23) => patch >= 14,
        (1, 24) => patch >= 8,
        (1, 25) => patch >= 4,
        (1, m) => m >= 26,
        (m, _) => m > 1,
    }
}

/// Lines up a timestamped log stream (`timestamps=true`) with what earlier
/// connections already wrote. The server resumes from `sinceTime` at
/// seconds precision, so it repeats lines; those are recognised by their
/// timestamp and, for lines that share the last timestamp written, by how
/// many of them were written (Go's rule skips them all and loses some).
#[derive(Debug, Default, Clone)]
pub struct LogCursor {
    /// The last timestamp written, as sent (RFC 3339, fixed-width nanos
    /// compare as text; parsed for safety).
    last: Option<(i128, String)>,
    /// Lines written with exactly that timestamp.
    at_last: u64,
    /// Lines with that timestamp seen on this connection.
    seen_at_last: u64,
    /// Whether this connection has moved past the repeats.
    past_repeats: bool,
}

/// What to do with one log line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineVerdict<'a> {
    /// Write these bytes (the message with its newline).
    Write(&'a [u8]),
    /// Already written by an earlier connection.
    Repeat,
}

impl LogCursor {
    /// A new connection starts; returns the `sinceTime` to ask for.
    pub fn handle_reconnect(&mut self) -> Option<String> {
        self.seen_at_last = 0;
        self.past_repeats = false;
        self.last.as_ref().map(|(nanos, _)| {
            let secs = nanos.div_euclid(1_000_000_000);
            let t = crate::gotime::unix_nanos_to_system_time(secs * 1_000_000_000);
            rfc3339_seconds(t)
        })
    }

    /// One complete line, `<timestamp> <message>\n`.
    pub fn handle_line<'a>(&mut self, line: &'a [u8]) -> LineVerdict<'a> {
        let (ts, msg) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let ts_text = String::from_utf8_lossy(ts).trim_end().to_string();
        let Some(nanos) = crate::gotime::parse_rfc3339(&ts_text) else {
            // No timestamp: nothing to line up with; write it whole.
            self.past_repeats = true;
            return LineVerdict::Write(line);
        };
        if !self.past_repeats {
            if let Some((last, _)) = &self.last {
                if nanos < *last {
                    return LineVerdict::Repeat;
                }
                if nanos == *last {
                    self.seen_at_last += 1;
                    if self.seen_at_last <= self.at_last {
                        return LineVerdict::Repeat;
                    }
                }
            }
            self.past_repeats = true;
        }
        match &self.last {
            Some((last, _)) if *last == nanos => self.at_last += 1,
            _ => {
                self.last = Some((nanos, ts_text));
                self.at_last = 1;
            }
        }
        LineVerdict::Write(msg)
    }
}

/// What to do once a log stream has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStream {
    /// The whole log has been written.
    Done,
    /// Open another stream after this pause.
    Reopen(Duration),
    /// Too many breaks in a row without progress.
    Fail,
}

/// Breaks in a row, without a line written, before the log is given up
/// (Go's 5), and the pause before reopening after one.
pub const LOG_FAILURES: u32 = 5;
pub const LOG_PAUSE: Duration = Duration::from_millis(200);

/// One worker's log over as many streams as it takes (§5.5, §10). Call
/// `handle_open` before each stream, `handle_line`/`handle_partial` for
/// what it carries, `handle_end` when it ends.
#[derive(Debug, Default)]
pub struct LogSession {
    cursor: LogCursor,
    failures: u32,
    /// The worker had terminated before this stream was opened, so the
    /// stream holds the rest of the log.
    complete: bool,
    wrote: bool,
}

impl LogSession {
    /// A stream is about to be opened; `worker_ended` from the pod just
    /// read. Returns the `sinceTime` to ask for.
    pub fn handle_open(&mut self, worker_ended: bool) -> Option<String> {
        self.complete = worker_ended;
        self.wrote = false;
        self.cursor.handle_reconnect()
    }

    /// A line ending in `\n` (or cut at the line cap): the bytes to write.
    pub fn handle_line<'a>(&mut self, line: &'a [u8]) -> Option<&'a [u8]> {
        match self.cursor.handle_line(line) {
            LineVerdict::Write(msg) => {
                self.wrote = true;
                Some(msg)
            }
            LineVerdict::Repeat => None,
        }
    }

    /// The stream ended inside a line. Only a complete log's last line is
    /// real; otherwise the rest of it comes on the next stream (the cursor
    /// must not count it as written).
    pub fn handle_partial<'a>(&mut self, line: &'a [u8]) -> Option<&'a [u8]> {
        if self.complete {
            self.handle_line(line)
        } else {
            None
        }
    }

    /// The stream ended: `clean` if at its proper end, not by an error.
    pub fn handle_end(&mut self, clean: bool) -> AfterStream {
        if self.wrote {
            self.failures = 0;
        }
        match (clean, self.complete) {
            (true, true) => AfterStream::Done,
            // Most likely the worker just exited: look again at once.
            (true, false) => AfterStream::Reopen(Duration::ZERO),
            (false, _) => {
                self.failures += 1;
                if self.failures >= LOG_FAILURES {
                    AfterStream::Fail
                } else {
                    AfterStream::Reopen(LOG_PAUSE)
                }
            }
        }
    }
}

/// `2006-01-02T15:04:05Z` in UTC.
fn rfc3339_seconds(t: std::time::SystemTime) -> String {
    let full = crate::gotime::rfc3339_nano(t);
    // rfc3339_nano gives `…:05Z` or `…:05.123Z`; keep the seconds.
    match full.find('.') {
        Some(i) => format!("{}Z", &full[..i]),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pod_shape() {
        let (pod, ns) = build_pod("EchoK", "busybox", "sh -c", "'cat; echo'", "").unwrap();
        assert_eq!(ns, None);
        assert_eq!(pod["metadata"]["generateName"], "echok-");
        let w = &pod["spec"]["containers"][0];
        assert_eq!(w["name"], "worker");
        assert_eq!(w["command"], json!(["sh", "-c"]));
        assert_eq!(w["args"], json!(["cat; echo"]));
        assert_eq!(w["stdin"], true);
        assert_eq!(w["stdinOnce"], true);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn user_pod_keeps_its_fields() {
        let user = "metadata:\n  name: mine\n  generateName: dropped\n  namespace: other\n  labels: {a: b}\n\
                    spec:\n  restartPolicy: Always\n  initContainers: [{name: init, image: x}]\n\
                    \x20 containers:\n  - name: side\n    image: s\n  - name: worker\n    image: w\n    resources: {limits: {cpu: '1'}}\n";
        let (pod, ns) = build_pod("k", "", "", "", user).unwrap();
        assert_eq!(ns.as_deref(), Some("other"));
        assert_eq!(pod["metadata"]["generateName"], "mine-");
        assert!(pod["metadata"].get("name").is_none());
        assert_eq!(pod["metadata"]["labels"]["a"], "b");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["initContainers"][0]["name"], "init");
        assert_eq!(pod["spec"]["containers"][1]["stdin"], true);
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(pod["spec"]["containers"][0].get("stdin"), None);
        let err = build_pod("k", "", "", "", "spec: {containers: [{name: a}]}").unwrap_err();
        assert_eq!(err, "at least one container must be named worker");
        // JSON is YAML.
        let (pod, _) = build_pod(
            "k",
            "",
            "",
            "",
            r#"{"spec":{"containers":[{"name":"worker"}]}}"#,
        )
        .unwrap();
        assert_eq!(pod["metadata"]["generateName"], "k-");
    }

    fn pod(phase: &str, conds: Value, statuses: Value) -> Value {
        json!({"status": {"phase": phase, "conditions": conds, "containerStatuses": statuses}})
    }

    #[test]
    fn wait_outcomes() {
        let t0 = Instant::now();
        let mut w = PodWait::new(t0, None);
        assert_eq!(
            w.handle_event("ADDED", &pod("Pending", json!(null), json!([]))),
            None
        );
        let ready = pod(
            "Running",
            json!([{"type": "Ready", "status": "True"}]),
            json!([]),
        );
        assert_eq!(w.handle_event("MODIFIED", &ready), Some(WaitEnd::Ready));
        assert_eq!(
            w.handle_event("MODIFIED", &pod("Succeeded", json!([]), json!([]))),
            Some(WaitEnd::Completed)
        );
        assert_eq!(
            w.handle_event("MODIFIED", &pod("Failed", json!([]), json!([]))),
            Some(WaitEnd::Failed(POD_FAILED.into()))
        );
        assert!(matches!(
            w.handle_event("DELETED", &ready),
            Some(WaitEnd::Failed(_))
        ));
    }

    #[test]
    fn image_pull_back_off_fails_on_the_fourth_sighting() {
        let mut w = PodWait::new(Instant::now(), None);
        let p = pod(
            "Pending",
            json!([{"type": "ContainersReady", "status": "False"}]),
            json!([{"name": "worker", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
        );
        for _ in 0..3 {
            assert_eq!(w.handle_event("MODIFIED", &p), None);
        }
        let end = w.handle_event("MODIFIED", &p);
        assert_eq!(end, Some(WaitEnd::Failed(PULL_BACK_OFF.into())));
        assert_eq!(
            failure_detail(PULL_BACK_OFF, &p),
            "container failed to start, ImagePullBackOff"
        );
    }

    #[test]
    fn pending_timeout_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut w = PodWait::new(t0, Some(Duration::from_secs(30)));
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(w.handle_timeout(t0 + Duration::from_secs(29)), None);
        assert_eq!(
            w.handle_timeout(t0 + Duration::from_secs(30)),
            Some(WaitEnd::Failed(WAIT_TIMEOUT.into()))
        );
        assert_eq!(PodWait::new(t0, None).poll_timeout(), None);
    }

    #[test]
    fn watch_steps() {
        let t0 = Instant::now();
        let mut w = PodWatch::new(t0, Some(Duration::from_secs(10)));
        assert_eq!(w.poll_request(t0), WaitRequest::List);
        let pending = json!({"metadata": {"resourceVersion": "5"}, "status": {"phase": "Pending"}});
        let list = json!({"metadata": {"resourceVersion": "7"}, "items": [pending]});
        assert_eq!(w.handle_list(&list), None);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            w.poll_request(t1),
            WaitRequest::Watch {
                resource_version: "7".into(),
                timeout: Some(Duration::from_secs(6))
            }
        );
        let ev = json!({"type": "MODIFIED", "object": {"metadata": {"resourceVersion": "9"},
                        "status": {"phase": "Pending", "conditions": []}}});
        assert_eq!(w.handle_event(&ev), WatchStep::Next);
        assert!(
            matches!(w.poll_request(t1), WaitRequest::Watch { resource_version, .. } if resource_version == "9")
        );
        assert_eq!(
            w.handle_event(&json!({"type": "ERROR", "object": {"code": 410}})),
            WatchStep::Relist
        );
        assert_eq!(w.poll_request(t1), WaitRequest::List);
        let ready = json!({"type": "MODIFIED", "object": {"metadata": {"resourceVersion": "11"},
                           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}});
        assert_eq!(w.handle_event(&ready), WatchStep::End(WaitEnd::Ready));
        assert_eq!(w.last_pod()["metadata"]["resourceVersion"], "11");
        assert_eq!(
            w.handle_timeout(t0 + Duration::from_secs(10)),
            Some(WaitEnd::Failed(WAIT_TIMEOUT.into()))
        );
    }

    #[test]
    fn exit_codes() {
        let p = pod(
            "Succeeded",
            json!([]),
            json!([{"name": "side", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "worker", "state": {"terminated": {"exitCode": 3, "message": "boom"}}}]),
        );
        assert_eq!(worker_exit(&p), Some((3, "boom".into())));
        assert_eq!(failure_detail("x", &p), "x, exit code 3: boom");
    }

    #[test]
    fn version_cut_off() {
        for (v, ok) in [
            ("v1.23.13", false),
            ("v1.23.14", true),
            ("v1.24.7-gke.1", false),
            ("v1.24.8", true),
            ("v1.25.4+k3s1", true),
            ("v1.25.3", false),
            ("v1.26.0", true),
            ("v1.30.2", true),
            ("v1.22.99", false),
            ("garbage", false),
        ] {
            assert_eq!(supports_reconnect(v), ok, "{v}");
        }
    }

    /// Feeds `lines` to the cursor, as a connection would.
    fn feed(c: &mut LogCursor, lines: &[&str], out: &mut Vec<u8>) {
        for l in lines {
            if let LineVerdict::Write(b) = c.handle_line(l.as_bytes()) {
                out.extend_from_slice(b);
            }
        }
    }

    #[test]
    fn resumed_stream_has_no_loss_or_duplication() {
        let all = [
            "2024-01-01T00:00:01.000000001Z a\n",
            "2024-01-01T00:00:01.500000000Z b\n",
            "2024-01-01T00:00:01.500000000Z c\n",
            "2024-01-01T00:00:01.500000000Z d\n",
            "2024-01-01T00:00:02.000000000Z e\n",
        ];
        // Cut after every prefix; the server resends from the second.
        for cut in 0..=all.len() {
            let mut c = LogCursor::default();
            let mut out = Vec::new();
            assert_eq!(c.handle_reconnect(), None);
            feed(&mut c, &all[..cut], &mut out);
            let since = c.handle_reconnect();
            let resend: Vec<&str> = match since.as_deref() {
                None => all.to_vec(),
                Some(s) => {
                    let s = crate::gotime::parse_rfc3339(s).unwrap();
                    all.iter()
                        .copied()
                        .filter(|l| crate::gotime::parse_rfc3339(&l[..30]).unwrap() >= s)
                        .collect()
                }
            };
            feed(&mut c, &resend, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "a\nb\nc\nd\ne\n",
                "cut {cut}"
            );
        }
    }

    #[test]
    fn log_session_over_broken_and_clean_streams() {
        let mut s = LogSession::default();
        assert_eq!(s.handle_open(false), None);
        assert_eq!(
            s.handle_line(b"2024-01-01T00:00:01.1Z a\n"),
            Some(&b"a\n"[..])
        );
        // A partial line while the worker runs: not written, not counted.
        assert_eq!(s.handle_partial(b"2024-01-01T00:00:01.2Z b"), None);
        assert_eq!(s.handle_end(false), AfterStream::Reopen(LOG_PAUSE));
        assert_eq!(
            s.handle_open(false).as_deref(),
            Some("2024-01-01T00:00:01Z")
        );
        assert_eq!(s.handle_line(b"2024-01-01T00:00:01.1Z a\n"), None);
        assert_eq!(
            s.handle_line(b"2024-01-01T00:00:01.2Z b\n"),
            Some(&b"b\n"[..])
        );
        // Clean end while the worker ran: look again at once.
        assert_eq!(s.handle_end(true), AfterStream::Reopen(Duration::ZERO));
        // Four breaks without progress are tolerated, the fifth is not.
        for _ in 0..4 {
            s.handle_open(false);
            assert_eq!(s.handle_end(false), AfterStream::Reopen(LOG_PAUSE));
        }
        s.handle_open(false);
        assert_eq!(
            s.handle_line(b"2024-01-01T00:00:02Z c\n"),
            Some(&b"c\n"[..])
        );
        assert_eq!(
            s.handle_end(false),
            AfterStream::Reopen(LOG_PAUSE),
            "progress resets"
        );
        for _ in 0..4 {
            s.handle_open(false);
            s.handle_end(false);
        }
        s.handle_open(false);
        assert_eq!(s.handle_end(false), AfterStream::Fail);
        // Once the worker has ended, the last line without newline counts.
        let mut s = LogSession::default();
        s.handle_open(true);
        assert_eq!(
            s.handle_partial(b"2024-01-01T00:00:01Z end"),
            Some(&b"end"[..])
        );
        assert_eq!(s.handle_end(true), AfterStream::Done);
    }

    #[test]
    fn since_time_has_seconds_precision() {
        let mut c = LogCursor::default();
        c.handle_line(b"2024-05-06T07:08:09.987654321Z x\n");
        assert_eq!(
            c.handle_reconnect().as_deref(),
            Some("2024-05-06T07:08:09Z")
        );
    }
}
