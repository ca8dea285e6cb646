//! Parsing one control-service line into a command (control.md §2–§3).
//! Pure: no I/O, every error is the text of the `ERROR:` reply.

use serde_json::Value;

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
}

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
        _ => Err(unknown()),
    }
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
}
