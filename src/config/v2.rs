//! The v2 configuration file (`--config-v2`, docs/config.md §7): a YAML map
//! from section names to items. Each item becomes the same raw directive a
//! legacy file would give, so both formats share one validation path and
//! produce the same [`super::Config`].

use std::path::Path;

use serde_yaml::Value;

use super::directive::RawDirective;
use super::schema;
use super::yaml;

/// How a section's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A single map of fields (`node:`, `log-level:`).
    One,
    /// A list of maps of fields (`tcp-listeners:`); a single map is taken as
    /// a list of one, as Go's decoder does.
    List,
}

/// One top-level key of the file.
#[derive(Debug)]
pub(crate) struct Section {
    /// Lower-case key (keys are matched case-insensitively, as viper does).
    pub key: &'static str,
    /// The legacy directive each item is.
    pub directive: &'static str,
    pub shape: Shape,
}

const fn one(key: &'static str, directive: &'static str) -> Section {
    Section {
        key,
        directive,
        shape: Shape::One,
    }
}

const fn list(key: &'static str, directive: &'static str) -> Section {
    Section {
        key,
        directive,
        shape: Shape::List,
    }
}

/// Every section Go's v2 reader knows (`cmd/config.go`), in its order, plus
/// `ip-routers`, the spelling Go's documentation uses for `iprouters`.
pub(crate) const SECTIONS: &[Section] = &[
    one("node", "node"),
    one("trace", "trace"),
    one("log-level", "log-level"),
    list("control-services", "control-service"),
    list("tls-clients", "tls-client"),
    list("tls-servers", "tls-server"),
    list("work-commands", "work-command"),
    list("work-kubernetes", "work-kubernetes"),
    one("work-signing", "work-signing"),
    one("work-verification", "work-verification"),
    list("iprouters", "ip-router"),
    list("ip-routers", "ip-router"),
    list("tcp-clients", "tcp-client"),
    list("tcp-servers", "tcp-server"),
    list("udp-clients", "udp-client"),
    list("udp-servers", "udp-server"),
    list("unix-socket-clients", "unix-socket-client"),
    list("unix-socket-servers", "unix-socket-server"),
    one("cert-init", "cert-init"),
    list("cert-makereqs", "cert-makereq"),
    list("cert-signreqs", "cert-signreq"),
    list("tcp-listeners", "tcp-listener"),
    list("udp-listeners", "udp-listener"),
    list("ws-listeners", "ws-listener"),
    list("tcp-peers", "tcp-peer"),
    list("udp-peers", "udp-peer"),
    list("ws-peers", "ws-peer"),
    one("local-only", "local-only"),
];

/// The top-level `version` key: Go reads it only to pick where the
/// Kubernetes tuning comes from; it selects nothing here.
const VERSION_KEY: &str = "version";

fn section(lower_key: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.key == lower_key)
}

/// Reads one v2 file into raw directives, in the order the file gives them.
pub(crate) fn load(path: &Path) -> Result<Vec<RawDirective>, String> {
    let prefix = format!("config file {}: ", path.display());
    let doc = yaml::read_document(path).map_err(|e| format!("{prefix}{e}"))?;
    parse_document(&doc, &prefix).map_err(|e| format!("{prefix}{e}"))
}

/// The directives of a parsed document; `prefix` starts each directive's
/// own error messages. Errors returned here lack the prefix.
fn parse_document(doc: &Value, prefix: &str) -> Result<Vec<RawDirective>, String> {
    let map = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(map) => map,
        Value::Sequence(_) => {
            return Err("the top level is a list, which is the legacy format; \
                        run without --config-v2 (-c FILE) or write a map of sections"
                .to_string());
        }
        other => return Err(format!("expected a map of sections, got {}", kind(other))),
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err("section names must be strings".to_string());
        };
        let lower = key.to_ascii_lowercase();
        if lower == VERSION_KEY {
            check_version(value)?;
            continue;
        }
        let sec = section(&lower)
            .ok_or_else(|| format!("unknown section {key:?} (known: {})", section_names()))?;
        // `iprouters` and `ip-routers` are one section.
        if seen.contains(&sec.directive) {
            return Err(format!("{}: section given more than once", sec.key));
        }
        seen.push(sec.directive);
        out.extend(items(sec, value, prefix)?);
    }
    Ok(out)
}

/// Go reads the key with `viper.GetInt`, which takes `2` and `"2"`.
fn check_version(value: &Value) -> Result<(), String> {
    let number = value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
    match number {
        Some(1 | 2) => Ok(()),
        _ => Err(format!("version: expected 1 or 2, got {}", show(value))),
    }
}

/// The raw directives of one section.
fn items(sec: &'static Section, value: &Value, prefix: &str) -> Result<Vec<RawDirective>, String> {
    let spec = schema::directive(sec.directive)
        .ok_or_else(|| format!("{}: no directive {:?}", sec.key, sec.directive))?;
    match (sec.shape, value) {
        (_, Value::Tagged(t)) => items(sec, &t.value, prefix),
        (Shape::One, _) => Ok(vec![item(spec, value, prefix.to_string())?]),
        (Shape::List, Value::Sequence(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| item(spec, v, format!("{prefix}{} item {}: ", sec.key, i + 1)))
            .collect(),
        (Shape::List, Value::Null) => Ok(Vec::new()),
        (Shape::List, Value::Mapping(_)) => Ok(vec![item(spec, value, prefix.to_string())?]),
        (Shape::List, other) => Err(format!(
            "{}: expected a list of maps, got {}",
            sec.key,
            kind(other)
        )),
    }
}

/// One item: a map of fields, or nothing (no fields given).
fn item(
    spec: &'static schema::DirectiveSpec,
    value: &Value,
    origin: String,
) -> Result<RawDirective, String> {
    let mut raw = RawDirective::new(spec, origin);
    match value {
        Value::Null => {}
        Value::Mapping(map) => {
            raw.params = yaml::named_params(spec, map).map_err(|e| format!("{}{e}", raw.origin))?
        }
        Value::Tagged(t) => return item(spec, &t.value, raw.origin),
        other => {
            return Err(format!(
                "{}{}: expected a map of fields, got {}",
                raw.origin,
                spec.name,
                kind(other)
            ));
        }
    }
    Ok(raw)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(t) => kind(&t.value),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        other => kind(other).to_string(),
    }
}

/// The section names, for error messages and help.
pub(crate) fn section_names() -> String {
    let names: Vec<&str> = SECTIONS.iter().map(|s| s.key).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::directive::ParamKey;

    fn parse(text: &str) -> Result<Vec<RawDirective>, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        parse_document(&doc, "")
    }

    fn names(items: &[RawDirective]) -> Vec<&str> {
        items.iter().map(|d| d.spec.name).collect()
    }

    #[test]
    fn every_section_names_a_directive() {
        for sec in SECTIONS {
            let spec = schema::directive(sec.directive);
            assert!(spec.is_some_and(|s| !s.hidden), "{}", sec.key);
            assert_eq!(sec.key.to_ascii_lowercase(), sec.key);
        }
    }

    #[test]
    fn sections_in_file_order() {
        let text = "
tcp-peers:
  - address: a:1
  - address: b:1
Node: {id: n}
trace:
udp-servers: []
ws-listeners: {port: 1}
version: 2
";
        let items = parse(text).expect("valid");
        assert_eq!(
            names(&items),
            ["tcp-peer", "tcp-peer", "node", "trace", "ws-listener"]
        );
        assert_eq!(items[1].origin, "tcp-peers item 2: ");
        assert_eq!(items[2].origin, "");
        assert_eq!(
            items[2].params,
            vec![(ParamKey::Named("id".into()), Value::String("n".into()))]
        );
    }

    #[test]
    fn shape_errors() {
        let e = |text: &str| parse(text).err().unwrap_or_default();
        assert_eq!(
            e("node: [{id: a}]"),
            "node: expected a map of fields, got a list"
        );
        assert_eq!(
            e("log-level: debug"),
            "log-level: expected a map of fields, got a string"
        );
        assert_eq!(
            e("tcp-peers: a:1"),
            "tcp-peers: expected a list of maps, got a string"
        );
        assert_eq!(
            e("tcp-listeners: [7323]"),
            "tcp-listeners item 1: tcp-listener: expected a map of fields, got a number"
        );
        assert!(e("- node: {}").contains("legacy format"));
        assert_eq!(e("42"), "expected a map of sections, got a number");
        assert_eq!(e("1: x"), "section names must be strings");
        assert_eq!(e("version: 3"), "version: expected 1 or 2, got 3");
        assert_eq!(e("version: two"), "version: expected 1 or 2, got \"two\"");
        assert!(parse("version: '2'").is_ok_and(|d| d.is_empty()));
        assert_eq!(
            e("iprouters: []\nip-routers: []"),
            "ip-routers: section given more than once"
        );
        assert_eq!(
            e("node: {}\nNODE: {}"),
            "node: section given more than once"
        );
        assert!(
            e("tcp-listener: []").starts_with("unknown section \"tcp-listener\" (known: node, ")
        );
        assert_eq!(
            e("tcp-peers: [{address: a, Address: b}]"),
            "tcp-peers item 1: tcp-peer: parameter address given more than once"
        );
    }
}
