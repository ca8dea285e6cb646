//! The legacy command-line grammar:
//! `receptor [--<directive> [<field>=<value> | <barevalue>] ...] ...`.

use std::path::PathBuf;

use serde_yaml::Value;

use super::directive::{ParamKey, RawDirective};
use super::schema;

/// One step of the command line, in argv order.
#[derive(Debug)]
pub(crate) enum Step {
    Directive(RawDirective),
    /// `-c FILE` / `--config FILE`.
    ConfigFile(PathBuf),
}

/// What the command line asks for before any directive is looked at.
#[derive(Debug, PartialEq)]
pub(crate) enum Special {
    Help,
    BashCompletion,
    /// `--completion SHELL`; the shell name as given (`None` when missing).
    Completion(Option<String>),
}

/// The directive name of a dash token: leading `--` or `-` stripped, lower-cased.
fn dash_name(token: &str) -> Option<String> {
    let stripped = token
        .strip_prefix("--")
        .or_else(|| token.strip_prefix('-'))?;
    Some(stripped.to_ascii_lowercase())
}

/// Finds `-h`/`--help`, `--bash-completion` or `--completion SHELL`
/// anywhere on the command line.
pub(crate) fn special(args: &[String]) -> Option<Special> {
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match dash_name(a)?.as_str() {
            "h" | "help" => Some(Special::Help),
            "bash-completion" => Some(Special::BashCompletion),
            "completion" => Some(Special::Completion(
                args.get(i + 1).filter(|s| !s.starts_with('-')).cloned(),
            )),
            _ => None,
        })
}

/// Splits argv (without argv\[0\]) into directives and config files.
pub(crate) fn parse(args: &[String]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut current: Option<RawDirective> = None;
    let mut tokens = args.iter();
    while let Some(token) = tokens.next() {
        let Some(name) = dash_name(token) else {
            let directive = current
                .as_mut()
                .ok_or_else(|| format!("parameter specified before command: {token:?}"))?;
            directive.params.push(param(token));
            continue;
        };
        if let Some(done) = current.take() {
            steps.push(Step::Directive(done));
        }
        match name.as_str() {
            "c" | "config" => steps.push(Step::ConfigFile(config_file(token, &mut tokens)?)),
            "config-v2" => {
                return Err(
                    "the v2 configuration format (--config-v2) is not supported yet".to_string(),
                );
            }
            _ => {
                let spec = schema::directive(&name)
                    .ok_or_else(|| format!("unknown directive {name:?}"))?;
                current = Some(RawDirective::new(spec, String::new()));
            }
        }
    }
    steps.extend(current.map(Step::Directive));
    Ok(steps)
}

fn config_file<'a>(
    flag: &str,
    tokens: &mut impl Iterator<Item = &'a String>,
) -> Result<PathBuf, String> {
    match tokens.next() {
        Some(file) if !file.starts_with('-') => Ok(PathBuf::from(file)),
        _ => Err(format!("{flag} requires a file name")),
    }
}

/// `key=value` (split at the first `=`) or a bare value.
fn param(token: &str) -> (ParamKey, Value) {
    match token.split_once('=') {
        Some((key, value)) => (
            ParamKey::Named(key.to_string()),
            Value::String(value.to_string()),
        ),
        None => (ParamKey::Bare, Value::String(token.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn directives(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .map(|s| match s {
                Step::Directive(d) => d.spec.name,
                Step::ConfigFile(_) => "<file>",
            })
            .collect()
    }

    #[test]
    fn splits_directives_and_params() {
        let steps = parse(&args(
            "--node id=foo --TCP-Listener port=7323 cost=2.0 -c f.yaml -log-level debug",
        ));
        let steps = steps.expect("valid");
        assert_eq!(
            directives(&steps),
            ["node", "tcp-listener", "<file>", "log-level"]
        );
        let Step::Directive(listener) = &steps[1] else {
            panic!("expected a directive");
        };
        assert_eq!(
            listener.params,
            vec![
                (ParamKey::Named("port".into()), Value::String("7323".into())),
                (ParamKey::Named("cost".into()), Value::String("2.0".into())),
            ]
        );
        let Step::Directive(level) = &steps[3] else {
            panic!("expected a directive");
        };
        assert_eq!(
            level.params,
            vec![(ParamKey::Bare, Value::String("debug".into()))]
        );
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        let steps = parse(&args("--ws-peer extraheader=X-A=b")).expect("valid");
        let Step::Directive(d) = &steps[0] else {
            panic!("expected a directive");
        };
        assert_eq!(
            d.params[0],
            (
                ParamKey::Named("extraheader".into()),
                Value::String("X-A=b".into())
            )
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&args("foo --node")).err(),
            Some("parameter specified before command: \"foo\"".to_string())
        );
        assert_eq!(
            parse(&args("--tcp-listner 1")).err(),
            Some("unknown directive \"tcp-listner\"".to_string())
        );
        assert_eq!(
            parse(&args("--config")).err(),
            Some("--config requires a file name".to_string())
        );
        assert_eq!(
            parse(&args("-c --node")).err(),
            Some("-c requires a file name".to_string())
        );
        assert!(parse(&args("-c a.yaml b.yaml")).is_err());
        assert!(parse(&args("--config-v2")).is_err());
        assert!(parse(&args("-")).is_err());
        assert!(parse(&[String::new()]).is_err());
    }

    #[test]
    fn specials() {
        assert_eq!(special(&args("--node -h")), Some(Special::Help));
        assert_eq!(special(&args("--HELP")), Some(Special::Help));
        assert_eq!(
            special(&args("--bash-completion")),
            Some(Special::BashCompletion)
        );
        assert_eq!(special(&args("--node help")), None);
        assert_eq!(
            special(&args("--completion zsh")),
            Some(Special::Completion(Some("zsh".into())))
        );
        assert_eq!(
            special(&args("--completion --node")),
            Some(Special::Completion(None))
        );
    }
}
