//! `--help` text and the `--bash-completion` script, generated from the schema.

use std::fmt::Write as _;

use super::schema::{DIRECTIVES, DirectiveSpec, FieldSpec, Section};

const PROGRAM: &str = "receptor";

/// The full help text.
pub fn help_text() -> String {
    let mut out = format!(
        "Usage: {PROGRAM} [--<action> [<param>=<value> ...] ...]\n\n\
         \x20  --help: Show this help\n\n\
         \x20  --config <filename>: Load additional config options from a YAML file\n\n\
         \x20  --bash-completion: Generate a completion script for the bash shell\n\
         \x20        Run \". <({PROGRAM} --bash-completion)\" to activate now\n\n"
    );
    for section in Section::ALL {
        if let Some(heading) = section.heading() {
            let _ = write!(out, "{heading}\n\n");
        }
        let listed = DIRECTIVES
            .iter()
            .filter(|d| d.section == section && !d.hidden);
        // Required directives first, as the Go daemon lists them.
        let (required, optional): (Vec<_>, Vec<_>) = listed.partition(|d| d.required);
        for d in required.into_iter().chain(optional) {
            directive_help(&mut out, d);
        }
    }
    out
}

/// Directives that parse but that this build cannot run yet; `--help`
/// says so rather than promise them.
pub const NOT_YET: &[&str] = &[
    "work-kubernetes",
    "work-python",
    "command-service",
    "ip-router",
];

fn directive_help(out: &mut String, d: &DirectiveSpec) {
    let _ = write!(out, "   --{}: {}", d.name, d.description);
    if d.required {
        out.push_str(" (required)");
    }
    if NOT_YET.contains(&d.name) {
        out.push_str(" [not supported yet]");
    }
    out.push('\n');
    for f in d.fields {
        field_help(out, f);
    }
    out.push('\n');
}

fn field_help(out: &mut String, f: &FieldSpec) {
    let _ = write!(
        out,
        "      {}=<{}>: {}",
        f.name,
        f.ty.help_name(),
        f.description
    );
    let mut extras = Vec::new();
    if f.required {
        extras.push("required".to_string());
    }
    if let Some(default) = f.default {
        extras.push(format!("default: {default}"));
    }
    if !extras.is_empty() {
        let _ = write!(out, " ({})", extras.join(", "));
    }
    out.push('\n');
}

/// A bash completion script (`. <(receptor --bash-completion)`).
pub fn bash_completion() -> String {
    let visible: Vec<&DirectiveSpec> = DIRECTIVES.iter().filter(|d| !d.hidden).collect();
    let mut actions = vec!["--help", "--bash-completion", "--config", "-c"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    actions.extend(visible.iter().map(|d| format!("--{}", d.name)));
    let mut cases = String::new();
    for d in &visible {
        let params: Vec<String> = d.fields.iter().map(|f| format!("{}=", f.name)).collect();
        let _ = write!(
            cases,
            "      --{})\n        COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))\n        ;;\n",
            d.name,
            params.join(" ")
        );
    }
    format!(
        "_{PROGRAM}()\n{{\n\
         \x20 local cur prev_action i actions\n\
         \x20 cur=${{COMP_WORDS[COMP_CWORD]}}\n\
         \x20 i=$((COMP_CWORD-1))\n\
         \x20 while [[ $i -gt 0 && ${{COMP_WORDS[$i]}} != -* ]]; do i=$((i-1)); done\n\
         \x20 prev_action=${{COMP_WORDS[$i]}}\n\
         \x20 actions=\"{actions}\"\n\
         \x20 if [[ $cur == -* ]]; then\n\
         \x20   COMPREPLY=($(compgen -W \"$actions\" -- \"$cur\"))\n\
         \x20 else\n\
         \x20   case $prev_action in\n\
         \x20     -c|--config)\n\
         \x20       COMPREPLY=($(compgen -f -- \"$cur\"))\n\
         \x20       ;;\n\
         {cases}\
         \x20     *)\n\
         \x20       COMPREPLY=($(compgen -W \"$actions\" -- \"$cur\"))\n\
         \x20       ;;\n\
         \x20   esac\n\
         \x20 fi\n\
         \x20 [[ $COMPREPLY == *= ]] && compopt -o nospace\n\
         }}\n\
         complete -F _{PROGRAM} {PROGRAM}\n",
        actions = actions.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_visible_directive_and_field() {
        let text = help_text();
        for d in DIRECTIVES {
            let line = format!("   --{}: ", d.name);
            assert_eq!(text.contains(&line), !d.hidden, "{}", d.name);
            if d.hidden {
                continue;
            }
            for f in d.fields {
                assert!(text.contains(&format!("      {}=<", f.name)), "{}", f.name);
            }
        }
        assert!(
            text.contains(
                "   --node: Specifies the node configuration of this instance (required)\n"
            )
        );
        assert!(text.contains("      port=<int>: Local TCP port to listen on (required)\n"));
        assert!(text.contains("      cost=<float>: Connection cost (weight) (default: 1.0)\n"));
        assert!(text.starts_with("Usage: receptor [--<action>"));
    }

    #[test]
    fn completion_mentions_directives() {
        let script = bash_completion();
        assert!(script.contains("--tcp-listener)"));
        assert!(script.contains("bindaddr= port="));
        assert!(!script.contains("command-runner"));
        assert!(script.ends_with("complete -F _receptor receptor\n"));
    }
}
