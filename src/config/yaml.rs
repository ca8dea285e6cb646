//! Legacy YAML config files: a sequence of directive items, each a bare
//! directive name or a single-key map `directive: <params>`.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::directive::{ParamKey, RawDirective};
use super::schema::{self, DirectiveSpec};

/// Reads and parses one config file into raw directives.
pub(crate) fn load(path: &Path) -> Result<Vec<RawDirective>, String> {
    let items = read_items(path)?;
    let file_prefix = format!("config file {}: ", path.display());
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let origin = format!("{file_prefix}item {}: ", i + 1);
            parse_item(item, origin.clone()).map_err(|e| format!("{origin}{e}"))
        })
        .collect()
}

/// Largest config file read. Real configs are a few KB; parsed YAML takes
/// some 90 times the file's size in memory (a 4 MiB file peaked at 380 MB,
/// a 50 MB one at 3.65 GB), so a huge file would cost gigabytes before it
/// could be refused.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The file's top-level items, unparsed.
pub(crate) fn read_items(path: &Path) -> Result<Vec<Value>, String> {
    read_document(path)
        .and_then(items_of)
        .map_err(|e| format!("config file {}: {e}", path.display()))
}

/// A config file (legacy or v2) parsed as one YAML value; errors lack the
/// file name.
pub(crate) fn read_document(path: &Path) -> Result<Value, String> {
    let text = read_capped(path)?;
    serde_yaml::from_str(&text).map_err(|e| e.to_string())
}

/// Reads a text file of at most [`MAX_CONFIG_BYTES`], refusing a larger
/// one before reading it whole.
fn read_capped(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let too_large = || format!("file is larger than {MAX_CONFIG_BYTES} bytes");
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if file.metadata().is_ok_and(|m| m.len() > MAX_CONFIG_BYTES) {
        return Err(too_large());
    }
    // The size can change (or be unknown, for a pipe): read one byte more.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

fn items_of(doc: Value) -> Result<Vec<Value>, String> {
    match doc {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => Ok(items),
        Value::Mapping(_) => Err("the top level is a map, which is the v2 format; \
                                  run with --config-v2 --config FILE, or write a list of directives"
            .to_string()),
        _ => Err("expected a list of directives".to_string()),
    }
}

/// The directive name of an item, lower-case as written.
pub(crate) fn item_name(item: &Value) -> Result<&str, String> {
    match item {
        Value::String(name) => Ok(name),
        Value::Mapping(map) if map.len() == 1 => match map.iter().next() {
            Some((Value::String(name), _)) => Ok(name),
            _ => Err("directive name must be a string".to_string()),
        },
        Value::Mapping(_) => {
            Err("an item must be a single directive (a map with exactly one key)".to_string())
        }
        _ => Err("an item must be a directive name or a `directive: params` map".to_string()),
    }
}

fn parse_item(item: &Value, origin: String) -> Result<RawDirective, String> {
    let spec = lookup(item_name(item)?)?;
    let mut raw = RawDirective::new(spec, origin);
    if let Value::Mapping(map) = item {
        let params = map.iter().next().map(|(_, v)| v).unwrap_or(&Value::Null);
        raw.params = params_of(spec, params)?;
    }
    Ok(raw)
}

/// Directive names in YAML must be written in lower case.
fn lookup(name: &str) -> Result<&'static DirectiveSpec, String> {
    if let Some(spec) = schema::directive(name) {
        return Ok(spec);
    }
    match schema::directive(&name.to_ascii_lowercase()) {
        Some(spec) => Err(format!(
            "directive {name:?} must be written in lower case: {:?}",
            spec.name
        )),
        None => Err(format!("unknown directive {name:?}")),
    }
}

fn params_of(spec: &DirectiveSpec, params: &Value) -> Result<Vec<(ParamKey, Value)>, String> {
    match params {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(map) => named_params(spec, map),
        Value::Sequence(_) => Err(format!(
            "{}: parameters must be a map or a single value, not a list",
            spec.name
        )),
        Value::Tagged(t) => params_of(spec, &t.value),
        scalar => Ok(vec![(ParamKey::Bare, scalar.clone())]),
    }
}

pub(crate) fn named_params(
    spec: &DirectiveSpec,
    map: &Mapping,
) -> Result<Vec<(ParamKey, Value)>, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err(format!("{}: parameter names must be strings", spec.name));
        };
        let lower = key.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!(
                "{}: parameter {lower} given more than once",
                spec.name
            ));
        }
        seen.push(lower);
        out.push((ParamKey::Named(key.clone()), value.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<RawDirective>, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        items_of(doc)?
            .iter()
            .map(|item| parse_item(item, String::new()))
            .collect()
    }

    #[test]
    fn item_forms() {
        let text = "
- local-only
- log-level: debug
- tcp-listener: 7323
- trace:
- node:
    id: foo
    DataDir: /d
";
        let items = parse(text).expect("valid");
        let names: Vec<&str> = items.iter().map(|d| d.spec.name).collect();
        assert_eq!(
            names,
            ["local-only", "log-level", "tcp-listener", "trace", "node"]
        );
        assert!(items[0].params.is_empty());
        assert_eq!(
            items[1].params,
            vec![(ParamKey::Bare, Value::String("debug".into()))]
        );
        assert_eq!(items[2].params, vec![(ParamKey::Bare, Value::from(7323))]);
        assert!(items[3].params.is_empty());
        assert_eq!(items[4].params[1].0, ParamKey::Named("DataDir".into()));
    }

    #[test]
    fn document_errors() {
        assert_eq!(parse("").map(|v| v.len()), Ok(0));
        let v2 = parse("node:\n  id: foo\n").err().unwrap_or_default();
        assert!(v2.contains("--config-v2"), "{v2}");
        assert!(parse("42").is_err());
        assert!(parse("- [a, b]").is_err());
        assert!(parse("- {node: {}, trace: {}}").is_err());
        assert!(parse("- 1: x").is_err());
    }

    #[test]
    fn directive_name_errors() {
        let e = parse("- TCP-Listener: 1").err().unwrap_or_default();
        assert_eq!(
            e,
            "directive \"TCP-Listener\" must be written in lower case: \"tcp-listener\""
        );
        assert_eq!(
            parse("- tcp-listner: 1").err(),
            Some("unknown directive \"tcp-listner\"".to_string())
        );
        assert!(parse("- config: x").is_err());
    }

    #[test]
    fn param_errors() {
        assert!(parse("- node: [a]").is_err());
        let e = parse("- node: {id: a, ID: b}").err().unwrap_or_default();
        assert_eq!(e, "node: parameter id given more than once");
        assert!(parse("- node: {1: a}").is_err());
    }
}
