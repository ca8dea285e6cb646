//! Value conversion with the Go daemon's rules: base-prefixed integers,
//! Go booleans and durations, and lists or maps given natively in YAML or as
//! JSON strings on the command line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::schema::FieldType;

/// A converted field value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `None` when given as an empty string.
    Duration(Option<Duration>),
    StrList(Vec<String>),
    FloatMap(BTreeMap<String, f64>),
    Json(serde_json::Value),
    MapList(Vec<Mapping>),
}

/// Converts `raw` to a value of type `ty`. `prev` is the value already set
/// for this field, which list fields append to.
pub(crate) fn convert(
    ty: FieldType,
    raw: &Value,
    prev: Option<FieldValue>,
) -> Result<FieldValue, String> {
    if let Value::Tagged(tagged) = raw {
        return convert(ty, &tagged.value, prev);
    }
    match ty {
        FieldType::Str => scalar_text(raw).map(FieldValue::Str),
        FieldType::Int => to_int(raw).map(FieldValue::Int),
        FieldType::Float => to_float(raw).map(FieldValue::Float),
        FieldType::Bool => to_bool(raw).map(FieldValue::Bool),
        FieldType::Duration => to_duration(raw).map(FieldValue::Duration),
        FieldType::StrList => {
            let mut list = match prev {
                Some(FieldValue::StrList(l)) => l,
                _ => Vec::new(),
            };
            extend_str_list(&mut list, raw)?;
            Ok(FieldValue::StrList(list))
        }
        FieldType::FloatMap => to_float_map(raw).map(FieldValue::FloatMap),
        FieldType::JsonMap => to_json_map(raw).map(FieldValue::Json),
        FieldType::MapList => to_map_list(raw).map(FieldValue::MapList),
    }
}

/// The text of a scalar; numbers and booleans become their text.
pub(crate) fn scalar_text(raw: &Value) -> Result<String, String> {
    match raw {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("value cannot be null".to_string()),
        Value::Sequence(_) => Err("expected a single value, not a list".to_string()),
        Value::Mapping(_) => Err("expected a single value, not a map".to_string()),
        Value::Tagged(t) => scalar_text(&t.value),
    }
}

fn to_int(raw: &Value) -> Result<i64, String> {
    match raw {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18) {
                Ok(f as i64)
            } else {
                Err(format!("invalid integer {:?}", n.to_string()))
            }
        }
        Value::String(s) => parse_go_int(s),
        other => Err(format!("invalid integer {}", describe(other))),
    }
}

fn to_float(raw: &Value) -> Result<f64, String> {
    match raw {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("invalid number {:?}", n.to_string())),
        Value::String(s) => parse_go_float(s),
        other => Err(format!("invalid number {}", describe(other))),
    }
}

fn to_bool(raw: &Value) -> Result<bool, String> {
    match raw {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_go_bool(s),
        Value::Number(n) => parse_go_bool(&n.to_string()),
        other => Err(format!("invalid boolean {}", describe(other))),
    }
}

fn to_duration(raw: &Value) -> Result<Option<Duration>, String> {
    let text = scalar_text(raw)?;
    if text.is_empty() {
        return Ok(None);
    }
    parse_go_duration(&text).map(Some)
}

/// A short description of a non-scalar value for error messages.
fn describe(raw: &Value) -> String {
    match raw {
        Value::Null => "(null)".to_string(),
        Value::Sequence(_) => "(a list)".to_string(),
        Value::Mapping(_) => "(a map)".to_string(),
        other => format!("{:?}", scalar_text(other).unwrap_or_default()),
    }
}

fn extend_str_list(list: &mut Vec<String>, raw: &Value) -> Result<(), String> {
    match raw {
        Value::Null => {
            list.clear();
            Ok(())
        }
        Value::Sequence(items) => {
            for item in items {
                list.push(list_item_text(item)?);
            }
            Ok(())
        }
        Value::String(s) if s.trim_start().starts_with('[') => {
            let items: Vec<serde_json::Value> =
                serde_json::from_str(s).map_err(|e| format!("invalid JSON list {s:?}: {e}"))?;
            for item in items {
                match item {
                    serde_json::Value::String(s) => list.push(s),
                    serde_json::Value::Number(n) => list.push(n.to_string()),
                    serde_json::Value::Bool(b) => list.push(b.to_string()),
                    _ => return Err(format!("invalid JSON list {s:?}: items must be strings")),
                }
            }
            Ok(())
        }
        Value::Mapping(_) => Err("expected a list of strings, not a map".to_string()),
        scalar => {
            list.push(scalar_text(scalar)?);
            Ok(())
        }
    }
}

fn list_item_text(item: &Value) -> Result<String, String> {
    match item {
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => Err(format!(
            "list items must be strings, found {}",
            describe(item)
        )),
        other => scalar_text(other),
    }
}

fn to_float_map(raw: &Value) -> Result<BTreeMap<String, f64>, String> {
    match raw {
        Value::Null => Ok(BTreeMap::new()),
        Value::Mapping(map) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let key = map_key_text(k)?;
                let value = to_float(v).map_err(|e| format!("key {key:?}: {e}"))?;
                out.insert(key, value);
            }
            Ok(out)
        }
        Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str::<BTreeMap<String, f64>>(s)
                .map_err(|e| format!("invalid JSON object {s:?}: {e}"))
        }
        _ => Err(format!(
            "expected a map of names to numbers, found {}",
            describe(raw)
        )),
    }
}

fn map_key_text(k: &Value) -> Result<String, String> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => scalar_text(k),
        other => Err(format!(
            "map keys must be strings, found {}",
            describe(other)
        )),
    }
}

fn to_json_map(raw: &Value) -> Result<serde_json::Value, String> {
    let json = match raw {
        Value::Null => return Ok(serde_json::Value::Object(serde_json::Map::new())),
        Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("invalid JSON object {s:?}: {e}"))?
        }
        Value::Mapping(_) => serde_json::to_value(raw).map_err(|e| format!("invalid map: {e}"))?,
        _ => serde_json::Value::Null,
    };
    if json.is_object() {
        Ok(json)
    } else {
        Err(format!("expected a map, found {}", describe(raw)))
    }
}

fn to_map_list(raw: &Value) -> Result<Vec<Mapping>, String> {
    let converted;
    let seq = match raw {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(seq) => seq,
        Value::String(s) if s.trim_start().starts_with('[') => {
            let json: serde_json::Value =
                serde_json::from_str(s).map_err(|e| format!("invalid JSON list {s:?}: {e}"))?;
            converted = serde_yaml::to_value(json).map_err(|e| e.to_string())?;
            match &converted {
                Value::Sequence(seq) => seq,
                _ => return Err("expected a list of maps".to_string()),
            }
        }
        _ => return Err(format!("expected a list of maps, found {}", describe(raw))),
    };
    seq.iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Mapping(m) => Ok(m.clone()),
            other => Err(format!(
                "item #{}: expected a map, found {}",
                i + 1,
                describe(other)
            )),
        })
        .collect()
}

/// Parses a config boolean as the Go daemon's option parser (ghjm/cmdline
/// `betterParseBool`) does: Go's `strconv.ParseBool` words plus `Y`, `N`,
/// `yes` and `no`. The control service's `signwork` is not read this way
/// (see `control::command`).
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "Y" | "true" | "TRUE" | "True" | "yes" | "Yes" | "YES" => Ok(true),
        "0" | "f" | "F" | "N" | "false" | "FALSE" | "False" | "no" | "No" | "NO" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// Parses a float as Go's `strconv.ParseFloat` would for ordinary input.
pub(crate) fn parse_go_float(s: &str) -> Result<f64, String> {
    let cleaned = s.replace('_', "");
    if s.is_empty() || s.contains("__") || s.starts_with('_') || s.ends_with('_') {
        return Err(format!("invalid number {s:?}"));
    }
    cleaned
        .parse::<f64>()
        .map_err(|_| format!("invalid number {s:?}"))
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)`: optional sign,
/// `0x`/`0o`/`0b` prefixes, a leading `0` meaning octal, `_` between digits.
pub(crate) fn parse_go_int(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid integer {s:?}");
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits, prefixed) = split_radix(body);
    if !underscores_ok(digits, prefixed) {
        return Err(invalid());
    }
    let digits = digits.replace('_', "");
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(invalid());
    }
    let magnitude = u64::from_str_radix(&digits, radix).map_err(|_| invalid())?;
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or_else(|| format!("integer {s:?} out of range"))
}

/// Splits a base prefix off: (radix, digits, had_prefix).
fn split_radix(body: &str) -> (u32, &str, bool) {
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("0x") => (16, &body[2..], true),
        Some("0o") => (8, &body[2..], true),
        Some("0b") => (2, &body[2..], true),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..], true),
        _ => (10, body, false),
    }
}

/// Underscores may only separate digits (or follow a base prefix).
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    if !digits.contains('_') {
        return true;
    }
    let starts_ok = prefixed || !digits.starts_with('_');
    starts_ok && !digits.ends_with('_') && !digits.contains("__")
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `0`). Negative durations
/// are rejected; the maximum is Go's (about 292 years).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, tail) = duration_term(rest).map_err(|e| format!("{}: {e}", invalid()))?;
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        rest = tail;
    }
    if total > i64::MAX as u128 {
        return Err(format!("duration {s:?} out of range"));
    }
    if negative && total != 0 {
        return Err(format!("negative duration {s:?} not allowed"));
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| invalid())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| invalid())?;
    Ok(Duration::new(secs, nanos))
}

/// Parses one `<number><unit>` term; returns its nanoseconds and the rest.
fn duration_term(s: &str) -> Result<(u128, &str), String> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = s.split_at(int_len);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(after) => after.split_at(after.bytes().take_while(u8::is_ascii_digit).count()),
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("expected a number".to_string());
    }
    let unit_len = rest
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_len);
    let scale = unit_nanos(unit)?;
    let whole: u128 = if int_part.is_empty() {
        0
    } else if int_part.len() > 20 {
        return Err("number too large".to_string());
    } else {
        int_part.parse().map_err(|_| "invalid number".to_string())?
    };
    let nanos = whole
        .checked_mul(scale)
        .ok_or_else(|| "number too large".to_string())?;
    Ok((nanos + fraction_nanos(frac_part, scale), rest))
}

fn unit_nanos(unit: &str) -> Result<u128, String> {
    match unit {
        "ns" => Ok(1),
        "us" | "\u{b5}s" | "\u{3bc}s" => Ok(1_000),
        "ms" => Ok(1_000_000),
        "s" => Ok(NANOS_PER_SEC),
        "m" => Ok(60 * NANOS_PER_SEC),
        "h" => Ok(3600 * NANOS_PER_SEC),
        "" => Err("missing unit".to_string()),
        other => Err(format!("unknown unit {other:?}")),
    }
}

/// `0.<frac>` units in nanoseconds, truncated. Digits past the 18th cannot
/// change the result for any unit up to an hour, so they are ignored.
fn fraction_nanos(frac: &str, scale: u128) -> u128 {
    let digits = &frac[..frac.len().min(18)];
    if digits.is_empty() {
        return 0;
    }
    let value: u128 = digits.parse().unwrap_or(0);
    value * scale / 10u128.pow(digits.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("0600"), Ok(384));
        assert_eq!(parse_go_int("0x1F"), Ok(31));
        assert_eq!(parse_go_int("0X1f"), Ok(31));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("-42"), Ok(-42));
        assert_eq!(parse_go_int("+7"), Ok(7));
        assert_eq!(parse_go_int("0"), Ok(0));
        assert_eq!(parse_go_int("1_000"), Ok(1000));
        assert_eq!(parse_go_int("0x_ff"), Ok(255));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            "",
            "-",
            "abc",
            "12a",
            "0x",
            "089",
            "1__0",
            "_1",
            "1_",
            "0x+5",
            " 1",
            "1.0",
            "9223372036854775808",
        ] {
            assert!(parse_go_int(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_bools() {
        for t in [
            "1", "t", "T", "Y", "true", "TRUE", "True", "yes", "Yes", "YES",
        ] {
            assert_eq!(parse_go_bool(t), Ok(true), "{t}");
        }
        for f in [
            "0", "f", "F", "N", "false", "FALSE", "False", "no", "No", "NO",
        ] {
            assert_eq!(parse_go_bool(f), Ok(false), "{f}");
        }
        for bad in ["", "y", "n", "tRUE", "on", "2"] {
            assert!(parse_go_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_floats() {
        assert_eq!(parse_go_float("2.5"), Ok(2.5));
        assert_eq!(parse_go_float("1"), Ok(1.0));
        assert_eq!(parse_go_float("1e3"), Ok(1000.0));
        assert_eq!(parse_go_float("-.5"), Ok(-0.5));
        assert!(parse_go_float("").is_err());
        assert!(parse_go_float("abc").is_err());
        assert!(parse_go_float("1.0.0").is_err());
    }

    #[test]
    fn go_durations() {
        let d = |x: &str| parse_go_duration(x);
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2h45m0.5s"), Ok(Duration::from_millis(9_900_500)));
        assert_eq!(d("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(d("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(d("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("-0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "1.s.",
            ".s",
            "-1s",
            "1h-1m",
            "99999999999h",
            "1 s",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scalars_from_yaml_types() {
        assert_eq!(
            convert(FieldType::Str, &Value::from(12), None),
            Ok(FieldValue::Str("12".into()))
        );
        assert_eq!(
            convert(FieldType::Str, &Value::Bool(true), None),
            Ok(FieldValue::Str("true".into()))
        );
        assert_eq!(
            convert(FieldType::Float, &Value::from(3), None),
            Ok(FieldValue::Float(3.0))
        );
        assert_eq!(
            convert(FieldType::Int, &s("0600"), None),
            Ok(FieldValue::Int(384))
        );
        assert_eq!(
            convert(FieldType::Int, &Value::from(2.0), None),
            Ok(FieldValue::Int(2))
        );
        assert!(convert(FieldType::Int, &Value::from(2.5), None).is_err());
        assert!(convert(FieldType::Int, &Value::Bool(true), None).is_err());
        assert!(convert(FieldType::Str, &Value::Null, None).is_err());
        assert_eq!(
            convert(FieldType::Bool, &s("Y"), None),
            Ok(FieldValue::Bool(true))
        );
        assert_eq!(
            convert(FieldType::Duration, &s(""), None),
            Ok(FieldValue::Duration(None))
        );
    }

    #[test]
    fn string_lists_append() {
        let first = convert(FieldType::StrList, &s("a"), None).ok();
        let second = convert(FieldType::StrList, &s("b"), first).ok();
        let third = convert(FieldType::StrList, &s(r#"["c", "d"]"#), second);
        assert_eq!(
            third,
            Ok(FieldValue::StrList(vec![
                "a".into(),
                "b".into(),
                "c".into(),
                "d".into()
            ]))
        );
        let yaml: Value = serde_yaml::from_str("[x, 5]").unwrap_or(Value::Null);
        assert_eq!(
            convert(FieldType::StrList, &yaml, None),
            Ok(FieldValue::StrList(vec!["x".into(), "5".into()]))
        );
        assert!(convert(FieldType::StrList, &s("[bad"), None).is_err());
        assert!(convert(FieldType::StrList, &s(r#"[{"a":1}]"#), None).is_err());
    }

    #[test]
    fn float_maps() {
        let expect = FieldValue::FloatMap(BTreeMap::from([
            ("n2".to_string(), 2.5),
            ("n3".to_string(), 1.0),
        ]));
        let json = convert(FieldType::FloatMap, &s(r#"{"n2":2.5,"n3":1}"#), None);
        assert_eq!(json, Ok(expect.clone()));
        let yaml: Value = serde_yaml::from_str("{n2: 2.5, n3: 1}").unwrap_or(Value::Null);
        assert_eq!(convert(FieldType::FloatMap, &yaml, None), Ok(expect));
        assert!(convert(FieldType::FloatMap, &s("n2=2"), None).is_err());
        assert!(convert(FieldType::FloatMap, &s(r#"{"n2":"x"}"#), None).is_err());
    }

    #[test]
    fn json_maps_and_map_lists() {
        let yaml: Value = serde_yaml::from_str("{a: 1, b: [x]}").unwrap_or(Value::Null);
        assert_eq!(
            convert(FieldType::JsonMap, &yaml, None),
            Ok(FieldValue::Json(serde_json::json!({"a": 1, "b": ["x"]})))
        );
        assert!(convert(FieldType::JsonMap, &s("x"), None).is_err());
        let rules = convert(FieldType::MapList, &s(r#"[{"action":"drop"}]"#), None);
        assert!(matches!(rules, Ok(FieldValue::MapList(ref l)) if l.len() == 1));
        assert!(convert(FieldType::MapList, &s("[1]"), None).is_err());
    }
}
