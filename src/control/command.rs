//! Parsing one control-service line into a command (docs/control.md §2–§3).
//! Pure: no I/O, every error is the text of the `ERROR:` reply.

use serde_json::{Map, Value};

use crate::work::SubmitRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `None` returns every field.
    Status {
        fields: Option<Vec<String>>,
    },
    Ping {
        target: String,
    },
    Traceroute {
        target: String,
    },
    /// Bridge this connection to a service on another node.
    Connect {
        node: String,
        service: String,
        tls: Option<String>,
    },
    Work(WorkCommand),
    /// Re-read the configuration and apply its backends.
    Reload,
}

/// The `work` subcommands (docs/control.md §3, docs/work.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkCommand {
    Submit(SubmitRequest),
    List(Option<String>),
    Status(String),
    Cancel(String),
    Release {
        unit: String,
        force: bool,
    },
    /// `framed`: the stream is to end with the unit's status
    /// (`work::trailer`), as one of our nodes asks.
    Results {
        unit: String,
        start: u64,
        framed: bool,
    },
}

/// Submit keys that are options, not work params.
const SUBMIT_OPTIONS: [&str; 8] = [
    "command",
    "subcommand",
    "node",
    "worktype",
    "tlsclient",
    "ttl",
    "signwork",
    "signature",
];

/// Parses a line with its newline and any `\r` already removed.
pub fn parse(line: &str) -> Result<Command, String> {
    if line.starts_with('{') {
        parse_json(line)
    } else {
        parse_text(line)
    }
}

fn parse_text(line: &str) -> Result<Command, String> {
    let (word, params) = line.split_once(' ').unwrap_or((line, ""));
    match word.to_lowercase().as_str() {
        "status" if params.is_empty() => Ok(Command::Status { fields: None }),
        "status" => Err("status command does not take parameters".into()),
        "ping" => target(params, "ping").map(|target| Command::Ping { target }),
        "traceroute" => target(params, "traceroute").map(|target| Command::Traceroute { target }),
        "connect" => connect_text(params),
        "work" => work_text(params).map(Command::Work),
        // Go ignores anything after the word.
        "reload" => Ok(Command::Reload),
        _ => Err(unknown()),
    }
}

fn work_text(params: &str) -> Result<WorkCommand, String> {
    let tokens: Vec<&str> = params.split(' ').collect();
    let sub = tokens[0].to_lowercase();
    let unit_only = |sub: &str| match tokens.len() {
        1 => Err(format!("work {sub} requires a unit ID")),
        2 => Ok(tokens[1].to_string()),
        _ => Err(format!(
            "work {sub} does not take parameters after the unit ID"
        )),
    };
    match sub.as_str() {
        "submit" => {
            if tokens.len() < 3 {
                return Err("work submit requires a target node and work type".into());
            }
            let mut req = SubmitRequest {
                node: tokens[1].into(),
                work_type: tokens[2].into(),
                ..SubmitRequest::default()
            };
            if tokens.len() > 3 {
                req.params.insert("params".into(), tokens[3..].join(" "));
            }
            Ok(WorkCommand::Submit(req))
        }
        "list" => Ok(WorkCommand::List(tokens.get(1).map(|s| s.to_string()))),
        "status" => unit_only(&sub).map(WorkCommand::Status),
        "cancel" => unit_only(&sub).map(WorkCommand::Cancel),
        "release" | "force-release" => unit_only(&sub).map(|unit| WorkCommand::Release {
            force: sub == "force-release",
            unit,
        }),
        "results" => {
            if tokens.len() < 2 {
                return Err("work results requires a unit ID".into());
            }
            if tokens.len() > 3 {
                return Err("work results only takes a unit ID and optional start position".into());
            }
            let start = match tokens.get(2) {
                None => 0,
                Some(t) => t
                    .parse::<i64>()
                    .map_err(|e| format!("error converting start position to integer: {e}"))?
                    .max(0) as u64,
            };
            Ok(WorkCommand::Results {
                unit: tokens[1].into(),
                start,
                framed: false,
            })
        }
        _ => Err("bad command".into()),
    }
}

fn work_json(obj: &Map<String, Value>) -> Result<WorkCommand, String> {
    let sub = match obj.get("subcommand") {
        None => return Err("field subcommand missing".into()),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("field subcommand must be a string".into()),
    };
    let field = |name: &str| match obj.get(name) {
        None => Err(format!("field {name} missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {name} must be a string")),
    };
    match sub {
        "submit" => submit_json(obj),
        "list" => Ok(WorkCommand::List(field("unitid").ok())),
        "status" => field("unitid").map(WorkCommand::Status),
        "cancel" => field("unitid").map(WorkCommand::Cancel),
        "release" | "force-release" => field("unitid").map(|unit| WorkCommand::Release {
            unit,
            force: sub == "force-release",
        }),
        "results" => {
            let unit = field("unitid")?;
            let start = match obj.get("startpos") {
                None => return Err("field startpos missing".into()),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                    .ok_or_else(|| {
                        format!("field startpos value {n} is not convertible to an int")
                    })?,
                // Go rejects strings too; a clear message beats its quirk.
                Some(other) => {
                    return Err(format!(
                        "field startpos value {} is not convertible to an int",
                        other
                            .as_str()
                            .map_or_else(|| other.to_string(), str::to_string)
                    ));
                }
            };
            let framed = obj.get(crate::work::trailer::ASK) == Some(&Value::Bool(true));
            Ok(WorkCommand::Results {
                unit,
                start,
                framed,
            })
        }
        _ => Err("bad command".into()),
    }
}

fn submit_json(obj: &Map<String, Value>) -> Result<WorkCommand, String> {
    let mut text = std::collections::BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::String(s) => {
                text.insert(k.clone(), s.clone());
            }
            _ => {
                return Err(format!(
                    "submit parameters must all be strings and {k} is not"
                ));
            }
        }
    }
    let take = |k: &str| text.get(k).cloned();
    let req = SubmitRequest {
        node: take("node").ok_or("field node missing")?,
        work_type: take("worktype").ok_or("field worktype missing")?,
        tls_client: take("tlsclient").unwrap_or_default(),
        ttl: take("ttl").unwrap_or_default(),
        sign_work: take("signwork").is_some_and(|v| signwork_is_true(&v)),
        params: text
            .iter()
            .filter(|(k, _)| !SUBMIT_OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Ok(WorkCommand::Submit(req))
}

/// The work signature a JSON command carries (docs/work.md §8), or
/// empty: text commands and a non-string `signature` carry none.
pub fn signature(line: &str) -> String {
    if !line.starts_with('{') {
        return String::new();
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => match obj.get("signature") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// Go's control service reads `signwork` with its own `boolFromMap`, not
/// `strconv.ParseBool`: only `true` is true, and anything else (`1`,
/// `True`, `yes`) is silently false.
fn signwork_is_true(v: &str) -> bool {
    v == "true"
}

/// `connect <node> <service> [<tls>]`, split on single spaces; receptorctl
/// always sends the third token, empty when there is no TLS config.
fn connect_text(params: &str) -> Result<Command, String> {
    let tokens: Vec<&str> = params.split(' ').collect();
    match tokens.as_slice() {
        [node, service] => connect(node, service, ""),
        [node, service, tls] => connect(node, service, tls),
        t if t.len() > 3 => Err("too many parameters".into()),
        _ => Err("no connect target".into()),
    }
}

fn connect(node: &str, service: &str, tls: &str) -> Result<Command, String> {
    if node.is_empty() || service.is_empty() {
        return Err("no connect target".into());
    }
    Ok(Command::Connect {
        node: node.to_string(),
        service: service.to_string(),
        tls: (!tls.is_empty()).then(|| tls.to_string()),
    })
}

fn target(params: &str, what: &str) -> Result<String, String> {
    let t = params.trim();
    if t.is_empty() {
        Err(format!("no {what} target"))
    } else {
        Ok(t.to_string())
    }
}

fn parse_json(line: &str) -> Result<Command, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| json_error(&e))?;
    let Value::Object(obj) = value else {
        return Err("JSON command must be an object".into());
    };
    let command = match obj.get("command") {
        None => return Err("JSON did not contain a command".into()),
        Some(Value::String(c)) => c.as_str(),
        Some(_) => return Err("command must be a string".into()),
    };
    let string_field = |name: &str, what: &str| match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(format!("no {what} target")),
        Some(_) => Err(format!("{name} must be a string")),
    };
    match command {
        "status" => status_fields(obj.get("requested_fields")),
        "ping" => string_field("target", "ping").map(|target| Command::Ping { target }),
        "traceroute" => {
            string_field("target", "traceroute").map(|target| Command::Traceroute { target })
        }
        "connect" => {
            let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
            connect(text("node"), text("service"), text("tls"))
        }
        "work" => work_json(&obj).map(Command::Work),
        "reload" => Ok(Command::Reload),
        _ => Err(unknown()),
    }
}

fn status_fields(requested: Option<&Value>) -> Result<Command, String> {
    let Some(requested) = requested else {
        return Ok(Command::Status { fields: None });
    };
    // Go panics when this is not a list; we answer with an error instead.
    let Value::Array(items) = requested else {
        return Err("requested_fields must be a list of strings".into());
    };
    let fields = items
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or("requested_fields must be a list of strings")?;
    Ok(Command::Status {
        fields: Some(fields),
    })
}

fn unknown() -> String {
    "Unknown command".into()
}

/// Go's wording for the two JSON errors a person is most likely to hit.
fn json_error(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected end of JSON input".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_commands() {
        assert_eq!(parse("status"), Ok(Command::Status { fields: None }));
        assert_eq!(parse("STATUS"), Ok(Command::Status { fields: None }));
        assert_eq!(
            parse("status extra"),
            Err("status command does not take parameters".into())
        );
        assert_eq!(
            parse("ping node2"),
            Ok(Command::Ping {
                target: "node2".into()
            })
        );
        assert_eq!(parse("ping"), Err("no ping target".into()));
        assert_eq!(
            parse("traceroute x"),
            Ok(Command::Traceroute { target: "x".into() })
        );
        assert_eq!(parse("foo bar"), Err("Unknown command".into()));
    }

    #[test]
    fn reload_in_both_forms_ignores_what_follows() {
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("Reload now please"), Ok(Command::Reload));
        assert_eq!(parse(r#"{"command":"reload"}"#), Ok(Command::Reload));
    }

    #[test]
    fn connect_forms() {
        let c = |n: &str, s: &str, t: Option<&str>| {
            Ok(Command::Connect {
                node: n.into(),
                service: s.into(),
                tls: t.map(str::to_string),
            })
        };
        assert_eq!(parse("connect n2 control "), c("n2", "control", None));
        assert_eq!(parse("connect n2 control"), c("n2", "control", None));
        assert_eq!(
            parse("connect n2 control tlsc"),
            c("n2", "control", Some("tlsc"))
        );
        assert_eq!(parse("connect n2"), Err("no connect target".into()));
        assert_eq!(parse("connect"), Err("no connect target".into()));
        assert_eq!(parse("connect a b c d"), Err("too many parameters".into()));
        assert_eq!(
            parse(r#"{"command":"connect","node":"n2","service":"control","tls":""}"#),
            c("n2", "control", None)
        );
        assert_eq!(
            parse(r#"{"command":"connect","node":"n2"}"#),
            Err("no connect target".into())
        );
    }

    #[test]
    fn json_commands() {
        assert_eq!(
            parse(r#"{"command":"status","requested_fields":["Version"]}"#),
            Ok(Command::Status {
                fields: Some(vec!["Version".into()])
            })
        );
        assert_eq!(
            parse(r#"{"command":"status","requested_fields":[]}"#),
            Ok(Command::Status {
                fields: Some(vec![])
            })
        );
        assert_eq!(
            parse(r#"{"command":"ping","target":"n"}"#),
            Ok(Command::Ping { target: "n".into() })
        );
        assert_eq!(parse(r#"{"command":"ping"}"#), Err("no ping target".into()));
        assert_eq!(
            parse(r#"{"command":"STATUS"}"#),
            Err("Unknown command".into())
        );
        assert_eq!(parse(r#"{"command":"foo"}"#), Err("Unknown command".into()));
    }

    fn work(line: &str) -> Result<WorkCommand, String> {
        match parse(line)? {
            Command::Work(w) => Ok(w),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn work_text_forms_and_errors() {
        let Ok(WorkCommand::Submit(req)) = work("work submit node2 demo -x 'a b'") else {
            panic!()
        };
        assert_eq!(
            (req.node.as_str(), req.work_type.as_str()),
            ("node2", "demo")
        );
        assert_eq!(req.params["params"], "-x 'a b'");
        assert_eq!(work("work list"), Ok(WorkCommand::List(None)));
        assert_eq!(
            work("work list ab"),
            Ok(WorkCommand::List(Some("ab".into())))
        );
        assert_eq!(work("WORK STATUS ab"), Ok(WorkCommand::Status("ab".into())));
        assert_eq!(
            work("work status"),
            Err("work status requires a unit ID".into())
        );
        assert_eq!(
            work("work status ab extra"),
            Err("work status does not take parameters after the unit ID".into())
        );
        assert_eq!(
            work("work force-release ab"),
            Ok(WorkCommand::Release {
                unit: "ab".into(),
                force: true
            })
        );
        assert_eq!(
            work("work results ab 6"),
            Ok(WorkCommand::Results {
                unit: "ab".into(),
                start: 6,
                framed: false
            })
        );
        assert_eq!(
            work("work results ab"),
            Ok(WorkCommand::Results {
                unit: "ab".into(),
                start: 0,
                framed: false
            })
        );
        assert!(
            work("work results ab x")
                .unwrap_err()
                .starts_with("error converting start position")
        );
        assert_eq!(work("work frobnicate"), Err("bad command".into()));
        assert_eq!(work("work"), Err("bad command".into()));
        assert_eq!(
            work("work submit n"),
            Err("work submit requires a target node and work type".into())
        );
    }

    #[test]
    fn work_json_forms_and_errors() {
        let Ok(WorkCommand::Submit(req)) = work(
            r#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"demo","params":"-v","secret_x":"s","ttl":"10s","signwork":"true"}"#,
        ) else {
            panic!()
        };
        assert_eq!(req.ttl, "10s");
        assert!(req.sign_work);
        assert_eq!(
            req.params.keys().collect::<Vec<_>>(),
            ["params", "secret_x"]
        );
        assert_eq!(
            work(r#"{"command":"work"}"#),
            Err("field subcommand missing".into())
        );
        assert_eq!(
            work(
                r#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"demo","x":1}"#
            ),
            Err("submit parameters must all be strings and x is not".into())
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"results","unitid":"x","startpos":"0"}"#),
            Err("field startpos value 0 is not convertible to an int".into())
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"results","unitid":"x","startpos":12}"#),
            Ok(WorkCommand::Results {
                unit: "x".into(),
                start: 12,
                framed: false
            })
        );
        assert_eq!(
            work(
                r#"{"command":"work","subcommand":"results","unitid":"x","startpos":0,"statustrailer":true}"#
            ),
            Ok(WorkCommand::Results {
                unit: "x".into(),
                start: 0,
                framed: true
            })
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"list"}"#),
            Ok(WorkCommand::List(None))
        );
        assert_eq!(
            work(r#"{"command":"work","subcommand":"nope"}"#),
            Err("bad command".into())
        );
    }

    #[test]
    fn signwork_1_is_false_as_in_go() {
        let sign_work = |v: &str| {
            let line = format!(
                r#"{{"command":"work","subcommand":"submit","node":"n2","worktype":"demo","signwork":"{v}"}}"#
            );
            match work(&line) {
                Ok(WorkCommand::Submit(req)) => req.sign_work,
                other => panic!("{v}: {other:?}"),
            }
        };
        assert!(sign_work("true"));
        for v in ["1", "t", "T", "True", "TRUE", "yes", "false", "0", ""] {
            assert!(!sign_work(v), "{v}");
        }
    }

    #[test]
    fn json_errors_are_one_clear_reply() {
        assert_eq!(
            parse(r#"{"command":"#),
            Err("unexpected end of JSON input".into())
        );
        assert_eq!(
            parse(r#"{"foo":"bar"}"#),
            Err("JSON did not contain a command".into())
        );
        assert_eq!(
            parse(r#"{"Command":"status"}"#),
            Err("JSON did not contain a command".into())
        );
        assert_eq!(
            parse(r#"{"command": 5}"#),
            Err("command must be a string".into())
        );
        assert!(parse(r#"{"command":"status","requested_fields":"Version"}"#).is_err());
        assert!(parse(r#"{"command":"status","requested_fields":[1]}"#).is_err());
        assert!(parse("{bad").is_err());
    }

    #[test]
    fn signature_is_taken_from_json_commands_only() {
        assert_eq!(
            signature(
                r#"{"command":"work","subcommand":"cancel","unitid":"u","signature":"t.k.n"}"#
            ),
            "t.k.n"
        );
        assert_eq!(signature(r#"{"command":"work","signature":5}"#), "");
        assert_eq!(signature("work cancel u"), "");
        assert_eq!(signature("{not json"), "");
    }
}
