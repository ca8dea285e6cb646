//! One directive's parameters: from raw `key=value` / YAML pairs to checked,
//! typed values with defaults applied.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::schema::{DirectiveSpec, FieldSpec};
use super::value::{FieldValue, convert};

/// How a parameter names its field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParamKey {
    /// A value without `key=`, for the directive's bare field.
    Bare,
    /// A field name as the user wrote it (matched case-insensitively).
    Named(String),
}

/// A directive as written, before conversion.
#[derive(Debug, Clone)]
pub(crate) struct RawDirective {
    pub spec: &'static DirectiveSpec,
    pub params: Vec<(ParamKey, Value)>,
    /// Where it came from, prefixed to error messages (empty for the CLI).
    pub origin: String,
}

impl RawDirective {
    pub(crate) fn new(spec: &'static DirectiveSpec, origin: String) -> Self {
        RawDirective {
            spec,
            params: Vec::new(),
            origin,
        }
    }
}

/// A directive whose parameters are checked and converted.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    pub spec: &'static DirectiveSpec,
    /// Copied from [`RawDirective::origin`].
    pub origin: String,
    values: BTreeMap<&'static str, FieldValue>,
}

/// Converts and checks every parameter, then applies defaults.
pub(crate) fn resolve(raw: &RawDirective) -> Result<Directive, String> {
    let spec = raw.spec;
    let fail = |msg: String| format!("{}{}: {msg}", raw.origin, spec.name);
    let mut values: BTreeMap<&'static str, FieldValue> = BTreeMap::new();
    for (key, value) in &raw.params {
        let field = find_field(spec, key).map_err(fail)?;
        let prev = values.remove(field.name);
        let converted = convert(field.ty, value, prev)
            .map_err(|e| fail(format!("parameter {}: {e}", field.name)))?;
        values.insert(field.name, converted);
    }
    let missing: Vec<&str> = spec
        .fields
        .iter()
        .filter(|f| f.required && !values.contains_key(f.name))
        .map(|f| f.name)
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "required parameter(s) missing: {}",
            missing.join(", ")
        )));
    }
    apply_defaults(spec, &mut values).map_err(fail)?;
    Ok(Directive {
        spec,
        origin: raw.origin.clone(),
        values,
    })
}

fn find_field(spec: &'static DirectiveSpec, key: &ParamKey) -> Result<&'static FieldSpec, String> {
    match key {
        ParamKey::Bare => spec
            .bare_field()
            .ok_or_else(|| "does not accept a bare value (use key=value)".to_string()),
        ParamKey::Named(name) => spec.field(&name.to_ascii_lowercase()).ok_or_else(|| {
            if spec.fields.is_empty() {
                format!("unknown parameter {name:?} (takes no parameters)")
            } else {
                format!("unknown parameter {name:?} (known: {})", spec.field_names())
            }
        }),
    }
}

fn apply_defaults(
    spec: &'static DirectiveSpec,
    values: &mut BTreeMap<&'static str, FieldValue>,
) -> Result<(), String> {
    for field in spec.fields {
        if let (Some(default), false) = (field.default, values.contains_key(field.name)) {
            let value = convert(field.ty, &Value::String(default.to_string()), None)
                .map_err(|e| format!("bad default for {}: {e}", field.name))?;
            values.insert(field.name, value);
        }
    }
    Ok(())
}

/// Typed access; an unset field reads as the type's empty value.
impl Directive {
    pub(crate) fn name(&self) -> &'static str {
        self.spec.name
    }

    /// An error message about this directive: `<origin><name>: <msg>`.
    pub(crate) fn error(&self, msg: impl std::fmt::Display) -> String {
        format!("{}{}: {msg}", self.origin, self.spec.name)
    }

    pub(crate) fn is_set(&self, field: &str) -> bool {
        self.values.contains_key(field)
    }

    pub(crate) fn str(&self, field: &str) -> String {
        match self.values.get(field) {
            Some(FieldValue::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    /// A string field, `None` when unset or empty.
    pub(crate) fn opt_str(&self, field: &str) -> Option<String> {
        Some(self.str(field)).filter(|s| !s.is_empty())
    }

    pub(crate) fn int(&self, field: &str) -> i64 {
        match self.values.get(field) {
            Some(FieldValue::Int(i)) => *i,
            _ => 0,
        }
    }

    pub(crate) fn float(&self, field: &str) -> f64 {
        match self.values.get(field) {
            Some(FieldValue::Float(f)) => *f,
            _ => 0.0,
        }
    }

    pub(crate) fn bool(&self, field: &str) -> bool {
        matches!(self.values.get(field), Some(FieldValue::Bool(true)))
    }

    pub(crate) fn duration(&self, field: &str) -> Option<Duration> {
        match self.values.get(field) {
            Some(FieldValue::Duration(d)) => *d,
            _ => None,
        }
    }

    pub(crate) fn str_list(&self, field: &str) -> Vec<String> {
        match self.values.get(field) {
            Some(FieldValue::StrList(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn float_map(&self, field: &str) -> BTreeMap<String, f64> {
        match self.values.get(field) {
            Some(FieldValue::FloatMap(m)) => m.clone(),
            _ => BTreeMap::new(),
        }
    }

    pub(crate) fn map_list(&self, field: &str) -> Vec<Mapping> {
        match self.values.get(field) {
            Some(FieldValue::MapList(l)) => l.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{DIRECTIVES, directive};

    fn raw(name: &str, params: &[(Option<&str>, &str)]) -> RawDirective {
        let spec = directive(name).expect("known directive");
        let mut r = RawDirective::new(spec, String::new());
        for (k, v) in params {
            let key = match k {
                Some(k) => ParamKey::Named(k.to_string()),
                None => ParamKey::Bare,
            };
            r.params.push((key, Value::String(v.to_string())));
        }
        r
    }

    fn resolve_err(r: &RawDirective) -> Result<(), String> {
        resolve(r).map(|_| ())
    }

    #[test]
    fn every_default_converts() {
        for spec in DIRECTIVES {
            let mut values = BTreeMap::new();
            assert_eq!(apply_defaults(spec, &mut values), Ok(()), "{}", spec.name);
        }
    }

    #[test]
    fn defaults_and_keys() {
        let d = resolve(&raw("tcp-listener", &[(Some("PORT"), "7323")]));
        let d = d.expect("valid");
        assert_eq!(d.int("port"), 7323);
        assert_eq!(d.str("bindaddr"), "0.0.0.0");
        assert_eq!(d.float("cost"), 1.0);
        assert!(!d.is_set("tls"));
    }

    #[test]
    fn errors_name_directive_and_key() {
        let e = resolve_err(&raw("tcp-listener", &[(Some("prot"), "1")]));
        assert_eq!(
            e,
            Err(
                "tcp-listener: unknown parameter \"prot\" (known: bindaddr, port, tls, cost, \
                 nodecost, allowedpeers)"
                    .to_string()
            )
        );
        let e = resolve_err(&raw("tcp-listener", &[(Some("port"), "abc")]));
        assert_eq!(
            e,
            Err("tcp-listener: parameter port: invalid integer \"abc\"".to_string())
        );
        let e = resolve_err(&raw("tcp-peer", &[(Some("cost"), "2")]));
        assert_eq!(
            e,
            Err("tcp-peer: required parameter(s) missing: address".to_string())
        );
        let e = resolve_err(&raw("trace", &[(None, "x")]));
        assert_eq!(
            e,
            Err("trace: does not accept a bare value (use key=value)".to_string())
        );
        let e = resolve_err(&raw("trace", &[(Some("a"), "x")]));
        assert_eq!(
            e,
            Err("trace: unknown parameter \"a\" (takes no parameters)".to_string())
        );
    }
}
