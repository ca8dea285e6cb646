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
            // Go switches to v2 only on the exact token.
            "config-v2" => return Err(format!("write {token:?} exactly as {V2_FLAG}")),
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

/// The token that selects the v2 command line and file, anywhere in argv
/// (Go compares each argument with it exactly).
pub(crate) const V2_FLAG: &str = "--config-v2";

/// The flags of the v2 command line: Go's cobra flags, nothing else.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct V2Flags {
    /// `--config FILE` or `--config=FILE`.
    pub config: Option<PathBuf>,
    pub version: bool,
    pub help: bool,
}

pub(crate) fn is_v2(args: &[String]) -> bool {
    args.iter().any(|a| a == V2_FLAG)
}

/// Parses a v2 command line (argv without argv\[0\]). Directives belong in
/// the file, so any other flag or argument is an error, as in Go.
pub(crate) fn parse_v2(args: &[String]) -> Result<V2Flags, String> {
    let mut flags = V2Flags::default();
    let mut tokens = args.iter().filter(|a| *a != V2_FLAG);
    while let Some(token) = tokens.next() {
        let file = match token.as_str() {
            "--config" => tokens.next().cloned(),
            t if t.starts_with("--config=") => Some(t["--config=".len()..].to_string()),
            "--version" => {
                flags.version = true;
                continue;
            }
            "-h" | "--help" => {
                flags.help = true;
                continue;
            }
            _ => {
                return Err(format!(
                    "{token:?} is not accepted with {V2_FLAG}, which takes only \
                     --config FILE, --version and --help (directives go in the file)"
                ));
            }
        };
        let file = file
            .filter(|f| !f.is_empty())
            .ok_or_else(|| "--config requires a file name".to_string())?;
        if flags.config.replace(PathBuf::from(file)).is_some() {
            return Err(format!("--config may be given only once with {V2_FLAG}"));
        }
    }
    Ok(flags)
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
        assert_eq!(
            parse(&args("-Config-V2")).err(),
            Some("write \"-Config-V2\" exactly as --config-v2".to_string())
        );
        assert!(parse(&args("-")).is_err());
        assert!(parse(&[String::new()]).is_err());
    }

    #[test]
    fn v2_flags() {
        assert!(is_v2(&args("--node a --config-v2")));
        assert!(!is_v2(&args("--config-v2=x -config-v2")));
        let flags = parse_v2(&args("--config-v2 --config f.yaml --version -h"));
        assert_eq!(
            flags,
            Ok(V2Flags {
                config: Some("f.yaml".into()),
                version: true,
                help: true,
            })
        );
        let flags = parse_v2(&args("--config=g.yaml --config-v2")).expect("valid");
        assert_eq!(flags.config, Some("g.yaml".into()));
        assert_eq!(parse_v2(&args("--config-v2")), Ok(V2Flags::default()));
        let e = |s: &str| parse_v2(&args(s)).err().unwrap_or_default();
        assert!(e("--config-v2 -c f.yaml").starts_with("\"-c\" is not accepted with --config-v2"));
        assert!(e("--config-v2 --config f --node a").starts_with("\"--node\" is not accepted"));
        assert!(e("--config-v2 --config f extra").starts_with("\"extra\" is not accepted"));
        assert_eq!(e("--config-v2 --config"), "--config requires a file name");
        assert_eq!(e("--config="), "--config requires a file name");
        assert_eq!(
            e("--config a --config b"),
            "--config may be given only once with --config-v2"
        );
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
