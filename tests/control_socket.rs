//! Raw control-socket protocol tests against one node (docs/control.md §2–§3).
//! No receptorctl: every byte is written and checked here.

mod common;

use std::collections::HashMap;
use std::fmt;

use common::{Conn, Node, is_go_duration};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// A lone node with a control socket and no peers.
fn lone(id: &str) -> Node {
    Node::start(id, &["- local-only".to_string()])
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
}

const NODE_ID_QUERY: &str = r#"{"command":"status","requested_fields":["NodeID"]}"#;

/// The exact reply to [`NODE_ID_QUERY`].
fn node_id_reply(node: &Node) -> String {
    format!(r#"{{"NodeID":"{}"}}"#, node.id)
}

/// The keys of a JSON object in the order they appear in the text.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, IgnoredAny)) = m.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

fn key_order(line: &str) -> Vec<String> {
    serde_json::from_str::<Keys>(line).expect("JSON object").0
}

#[test]
fn greeting_names_the_node() {
    let node = lone("greeter");
    let (_conn, greeting) = Conn::open(&node.socket);
    assert_eq!(greeting, "Receptor Control, node greeter\n");
}

#[test]
fn version_probe_returns_only_version() {
    let node = lone("vprobe");
    let mut c = node.connect();
    let reply = c.cmd(r#"{"command":"status","requested_fields":["Version"]}"#);
    let v = json(&reply);
    let obj = v.as_object().expect("object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["Version"], "reply {reply}");
    let version = obj["Version"].as_str().expect("Version is a string");
    // Compact, exactly one line, nothing else.
    assert_eq!(reply, format!(r#"{{"Version":{}}}"#, Value::from(version)));
}

#[test]
fn requested_fields_filter_and_ignore_unknown_names() {
    let node = lone("fields");
    let mut c = node.connect();
    let reply =
        c.cmd(r#"{"command":"status","requested_fields":["NodeID","Connections","Bogus"]}"#);
    assert_eq!(reply, r#"{"Connections":[],"NodeID":"fields"}"#);
    assert_eq!(c.cmd(r#"{"command":"status","requested_fields":[]}"#), "{}");
}

#[test]
fn full_status_has_every_key_sorted_and_own_ad() {
    let node = lone("fullstat");
    let mut c = node.connect();
    for command in ["status", r#"{"command":"status"}"#, "STATUS"] {
        let reply = c.cmd(command);
        assert_eq!(
            key_order(&reply),
            [
                "Advertisements",
                "Connections",
                "KnownConnectionCosts",
                "NodeID",
                "RoutingTable",
                "SystemCPUCount",
                "SystemMemoryMiB",
                "Version"
            ],
            "`{command}` → {reply}"
        );
        let v = json(&reply);
        assert_eq!(v["NodeID"], "fullstat");
        assert_eq!(
            v["Connections"],
            Value::Array(vec![]),
            "Connections must be [] not null"
        );
        assert_eq!(v["RoutingTable"], serde_json::json!({}));
        assert!(v["Version"].is_string());
        assert!(
            v["SystemCPUCount"].as_u64().is_some_and(|n| n >= 1),
            "{reply}"
        );
        assert!(
            v["SystemMemoryMiB"].as_u64().is_some_and(|n| n >= 1),
            "{reply}"
        );

        #[derive(Deserialize)]
        struct AdKeys {
            #[serde(rename = "Advertisements")]
            ads: Vec<Keys>,
        }
        let ad_keys = serde_json::from_str::<AdKeys>(&reply).expect("ads").ads;
        for keys in ad_keys {
            assert_eq!(
                keys.0,
                [
                    "NodeID",
                    "Service",
                    "Time",
                    "ConnType",
                    "Tags",
                    "WorkCommands"
                ],
                "ad objects keep Go struct order, no Cancel: {reply}"
            );
        }
        let own: Vec<&Value> = v["Advertisements"]
            .as_array()
            .expect("Advertisements array")
            .iter()
            .filter(|a| a["NodeID"] == "fullstat")
            .collect();
        assert_eq!(own.len(), 1, "exactly one own control ad: {reply}");
        assert_eq!(own[0]["Service"], "control");
        assert_eq!(own[0]["ConnType"], 1);
        assert_eq!(
            own[0]["Tags"],
            serde_json::json!({"type": "Control Service"})
        );
        let time = own[0]["Time"].as_str().expect("Time string");
        assert!(
            time.len() >= 20 && time.as_bytes()[4] == b'-' && time.as_bytes()[10] == b'T',
            "Time {time:?} is RFC 3339"
        );
    }
}

#[test]
fn status_with_a_parameter_is_an_error() {
    let node = lone("statusx");
    let mut c = node.connect();
    assert_eq!(
        c.cmd("status extra"),
        "ERROR: status command does not take parameters"
    );
    assert_eq!(c.cmd(NODE_ID_QUERY), node_id_reply(&node));
}

#[test]
fn unknown_commands_get_one_error_line() {
    let node = lone("unknown");
    let mut c = node.connect();
    for command in [
        "foo bar",
        "frobnicate",
        r#"{"command":"foo"}"#,
        r#"{"command":"STATUS"}"#,
    ] {
        assert_eq!(
            c.cmd(command),
            "ERROR: Unknown command",
            "reply to `{command}`"
        );
        // The next command gets its own answer: no second line was pending.
        assert_eq!(
            c.cmd(NODE_ID_QUERY),
            node_id_reply(&node),
            "after `{command}`"
        );
    }
}

#[test]
fn malformed_json_gives_exactly_one_error_line() {
    // Go writes `ERROR: <json error>` and then `ERROR: Unknown command`; we
    // deliberately write only the first, so a client reading one line per
    // command stays in step.
    let node = lone("badjson");
    let mut c = node.connect();
    for command in [
        r#"{"command":"#,
        "{bad",
        r#"{"command":"status"} trailing"#,
        "{",
    ] {
        let reply = c.cmd(command);
        assert!(reply.starts_with("ERROR: "), "`{command}` → {reply:?}");
        assert_ne!(
            reply, "ERROR: Unknown command",
            "`{command}` should name the JSON error"
        );
        assert_eq!(
            c.cmd(NODE_ID_QUERY),
            node_id_reply(&node),
            "after `{command}`"
        );
    }
}

#[test]
fn json_command_field_errors() {
    let node = lone("cmdfield");
    let mut c = node.connect();
    let cases = [
        (r#"{"command": 5}"#, "ERROR: command must be a string"),
        (r#"{"command": null}"#, "ERROR: command must be a string"),
        (r#"{"foo":"bar"}"#, "ERROR: JSON did not contain a command"),
        (
            r#"{"Command":"status"}"#,
            "ERROR: JSON did not contain a command",
        ),
        ("{}", "ERROR: JSON did not contain a command"),
    ];
    for (command, want) in cases {
        assert_eq!(c.cmd(command), want, "reply to `{command}`");
        assert_eq!(
            c.cmd(NODE_ID_QUERY),
            node_id_reply(&node),
            "after `{command}`"
        );
    }
}

#[test]
fn carriage_returns_are_dropped() {
    let node = lone("crlf");
    let mut c = node.connect();
    let want = node_id_reply(&node);
    c.send(format!("{NODE_ID_QUERY}\r\n").as_bytes());
    assert_eq!(c.line(), want, "CRLF line ending");
    c.send(b"{\"command\":\"st\ratus\",\"requested_fields\":[\"NodeID\"]}\n");
    assert_eq!(c.line(), want, "\\r inside the command word");
    c.send(b"\r\rstat\rus ex\rtra\r\n");
    assert_eq!(c.line(), "ERROR: status command does not take parameters");
}

#[test]
fn empty_lines_are_ignored() {
    let node = lone("empties");
    let mut c = node.connect();
    c.send(b"\n\n\r\n");
    c.send(format!("\n{NODE_ID_QUERY}\n\n").as_bytes());
    assert_eq!(c.line(), node_id_reply(&node));
    // Had an empty line produced a reply, it would be read here instead.
    assert_eq!(
        c.cmd("status extra"),
        "ERROR: status command does not take parameters"
    );
}

#[test]
fn partial_line_then_half_close_runs_it_and_server_closes() {
    let node = lone("partial");
    let mut c = node.connect();
    c.send(NODE_ID_QUERY.as_bytes());
    c.half_close();
    let rest = c.read_to_end();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("{}\n", node_id_reply(&node))
    );

    // Half-close with nothing pending: the server just closes.
    let mut c = node.connect();
    assert_eq!(c.cmd(NODE_ID_QUERY), node_id_reply(&node));
    c.half_close();
    assert_eq!(c.read_to_end(), b"");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let node = lone("pipeline");
    let mut c = node.connect();
    let batch = format!(
        "{NODE_ID_QUERY}\n{}\nstatus extra\n{{\"command\":\"ping\",\"target\":\"pipeline\"}}\n{NODE_ID_QUERY}\n",
        r#"{"command":"status","requested_fields":["Version"]}"#
    );
    c.send(batch.as_bytes());
    assert_eq!(c.line(), node_id_reply(&node));
    assert!(c.line().starts_with(r#"{"Version":"#));
    assert_eq!(c.line(), "ERROR: status command does not take parameters");
    assert_eq!(json(&c.line())["Success"], true);
    assert_eq!(c.line(), node_id_reply(&node));
}

#[test]
fn requested_fields_not_a_list_is_an_error_not_a_crash() {
    // Go panics (and the daemon dies) on this input; we answer an ERROR line.
    let mut node = lone("notalist");
    let mut c = node.connect();
    for fields in [r#""Version""#, "5", r#"{"Version":true}"#, "null", "[1]"] {
        let command = format!(r#"{{"command":"status","requested_fields":{fields}}}"#);
        let reply = c.cmd(&command);
        if fields == "null" {
            // JSON null may mean "not given" (full status) or be an error.
            assert!(reply.starts_with("ERROR: ") || json(&reply)["NodeID"] == "notalist");
        } else {
            assert!(reply.starts_with("ERROR: "), "`{command}` → {reply:?}");
        }
        assert_eq!(
            c.cmd(NODE_ID_QUERY),
            node_id_reply(&node),
            "after `{command}`"
        );
    }
    assert!(node.is_running(), "daemon died\n{}", node.log_tail(20));
    assert_eq!(node.connect().cmd(NODE_ID_QUERY), node_id_reply(&node));
}

fn assert_ping_ok(reply: &str, from: &str) {
    assert_eq!(
        key_order(reply),
        ["From", "Success", "Time", "TimeStr"],
        "{reply}"
    );
    let v = json(reply);
    assert_eq!(v["From"], from, "{reply}");
    assert_eq!(v["Success"], true, "{reply}");
    assert!(v["Time"].is_u64(), "Time is integer ns: {reply}");
    let s = v["TimeStr"].as_str().expect("TimeStr");
    assert!(is_go_duration(s), "TimeStr {s:?} is a Go duration");
}

#[test]
fn ping_self_and_localhost() {
    let node = lone("pinger");
    let mut c = node.connect();
    assert_ping_ok(&c.cmd("ping pinger"), "pinger");
    assert_ping_ok(&c.cmd("ping localhost"), "pinger");
    assert_ping_ok(&c.cmd(r#"{"command":"ping","target":"pinger"}"#), "pinger");
    assert_ping_ok(
        &c.cmd(r#"{"command":"ping","target":"localhost"}"#),
        "pinger",
    );
}

#[test]
fn ping_errors() {
    let node = lone("pingerr");
    let mut c = node.connect();
    assert_eq!(c.cmd("ping"), "ERROR: no ping target");
    assert_eq!(c.cmd(r#"{"command":"ping"}"#), "ERROR: no ping target");
    assert_eq!(
        c.cmd("ping nosuchnode"),
        r#"{"Error":"no route to node","Success":false}"#
    );
    assert_eq!(
        c.cmd(r#"{"command":"ping","target":"nosuchnode"}"#),
        r#"{"Error":"no route to node","Success":false}"#
    );
}

#[test]
fn traceroute_reply_shape() {
    let node = lone("tracer");
    let mut c = node.connect();
    for command in [
        "traceroute tracer",
        r#"{"command":"traceroute","target":"tracer"}"#,
    ] {
        let reply = c.cmd(command);
        assert_eq!(key_order(&reply), ["0"], "`{command}` → {reply}");
        let hop_keys: HashMap<String, Keys> = serde_json::from_str(&reply).expect("hops");
        assert_eq!(hop_keys["0"].0, ["From", "Time", "TimeStr"], "{reply}");
        let hop = &json(&reply)["0"];
        assert_eq!(hop["From"], "tracer");
        assert!(hop["Time"].is_u64(), "{reply}");
        assert!(
            is_go_duration(hop["TimeStr"].as_str().expect("TimeStr")),
            "{reply}"
        );
        assert!(
            reply.starts_with(r#"{"0":{"From":"tracer","Time":"#),
            "{reply}"
        );
    }
}

#[test]
fn overlong_garbage_does_not_crash_the_daemon() {
    let mut node = lone("garbage");

    // 1 MiB line: an ordinary unknown command.
    let mut c = node.connect();
    let mut big = vec![b'x'; 1 << 20];
    big.push(b'\n');
    c.send(&big);
    assert_eq!(c.line(), "ERROR: Unknown command");
    assert_eq!(c.cmd(NODE_ID_QUERY), node_id_reply(&node));

    // Invalid UTF-8 and NUL bytes.
    assert_eq!(c.cmd("\u{0}\u{1}garbage \u{7f}"), "ERROR: Unknown command");
    c.send(b"\xff\xfe\x80 \xc3\n");
    assert!(c.line().starts_with("ERROR: "));
    assert_eq!(c.cmd(NODE_ID_QUERY), node_id_reply(&node));

    // 20 MiB of garbage with no newline: the server may answer or hang up,
    // but must stay up. Write errors (it closed on us) are fine.
    let mut writer = std::os::unix::net::UnixStream::connect(&node.socket).expect("connect");
    let junk: Vec<u8> = (0..20u32 << 20)
        .map(|i| b"ab{[\"\\ }"[(i % 8) as usize])
        .collect();
    let _ = std::io::Write::write_all(&mut writer, &junk);
    let _ = writer.shutdown(std::net::Shutdown::Write);
    drop(writer);

    assert!(node.is_running(), "daemon died\n{}", node.log_tail(20));
    assert_eq!(node.connect().cmd(NODE_ID_QUERY), node_id_reply(&node));
}

#[test]
fn socket_is_mode_0600_and_locked() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let node = lone("sockmode");
    let meta = std::fs::metadata(&node.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "default permissions"
    );
    let mut lock = node.socket.clone().into_os_string();
    lock.push(".lock");
    assert!(
        std::path::Path::new(&lock).is_file(),
        "lock file {lock:?} exists"
    );
}
