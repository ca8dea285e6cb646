//! `--help` text and the `--bash-completion` script, generated from the schema.

use std::fmt::Write as _;

use super::schema::{DIRECTIVES, DirectiveSpec, FieldSpec, Section};
use super::v2::{SECTIONS, Shape};

const PROGRAM: &str = "receptor";

/// The full help text.
pub fn help_text() -> String {
    let mut out = format!(
        "Usage: {PROGRAM} [--<action> [<param>=<value> ...] ...]\n\n\
         \x20  --help: Show this help\n\n\
         \x20  --config <filename>: Load additional config options from a YAML file\n\n\
         \x20  --config-v2: Read a v2 config file (a map of sections) instead;\n\
         \x20        \"{PROGRAM} --config-v2 --help\" explains it\n\n\
         \x20  --bash-completion: Generate a completion script for the bash shell\n\
         \x20        Run \". <({PROGRAM} --bash-completion)\" to activate now\n\n\
         \x20  --completion <shell>: Generate a completion script for bash or zsh\n\n"
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

/// The help text of the v2 command line (`--config-v2 --help`).
pub fn v2_help_text() -> String {
    let mut out = format!(
        "Usage: {PROGRAM} --config-v2 [--config <filename>] [--version]\n\n\
         \x20  --config <filename>: The v2 config file (default is $HOME/receptor.yaml)\n\n\
         \x20  --version: Show the Receptor version\n\n\
         \x20  --help: Show this help\n\n\
         The file is a YAML map of sections. A section holds a map of the fields of\n\
         a directive of the legacy format ({PROGRAM} --help lists them), or a list\n\
         of such maps:\n\n"
    );
    for sec in SECTIONS {
        let _ = match sec.shape {
            Shape::One => writeln!(out, "   {}: {}", sec.key, sec.directive),
            Shape::List => writeln!(out, "   {}: [{}, ...]", sec.key, sec.directive),
        };
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
    let actions = completion_actions(&visible);
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
         \x20     --completion)\n\
         \x20       COMPREPLY=($(compgen -W \"bash zsh\" -- \"$cur\"))\n\
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

/// What completes after a dash: the options, then every visible directive.
fn completion_actions(visible: &[&DirectiveSpec]) -> Vec<String> {
    let mut actions: Vec<String> = [
        "--help",
        "--bash-completion",
        "--completion",
        "--config",
        "-c",
        "--config-v2",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    actions.extend(visible.iter().map(|d| format!("--{}", d.name)));
    actions
}

/// A zsh completion script: install it as `_receptor` in `$fpath`, or load
/// it now with `source <(receptor --completion zsh)`.
pub fn zsh_completion() -> String {
    let visible: Vec<&DirectiveSpec> = DIRECTIVES.iter().filter(|d| !d.hidden).collect();
    let actions = completion_actions(&visible);
    let mut cases = String::new();
    for d in &visible {
        let params: Vec<String> = d.fields.iter().map(|f| format!("{}=", f.name)).collect();
        let _ = writeln!(
            cases,
            "    --{}) compadd -S '' -- {} ;;",
            d.name,
            params.join(" ")
        );
    }
    format!(
        "#compdef {PROGRAM}\n\
         _{PROGRAM}() {{\n\
         \x20 local -a actions\n\
         \x20 actions=({actions})\n\
         \x20 local cur=${{words[CURRENT]}} i=$((CURRENT-1))\n\
         \x20 while (( i > 1 )) && [[ ${{words[i]}} != -* ]]; do (( i-- )); done\n\
         \x20 if [[ $cur == -* ]]; then\n\
         \x20   compadd -a actions\n\
         \x20   return\n\
         \x20 fi\n\
         \x20 case ${{words[i]}} in\n\
         \x20   -c|--config) _files ;;\n\
         \x20   --completion) compadd bash zsh ;;\n\
         {cases}\
         \x20   *) compadd -a actions ;;\n\
         \x20 esac\n\
         }}\n\
         if [[ ${{funcstack[1]}} == _{PROGRAM} ]]; then\n\
         \x20 _{PROGRAM} \"$@\"\n\
         else\n\
         \x20 compdef _{PROGRAM} {PROGRAM}\n\
         fi\n",
        actions = actions.join(" "),
    )
}

/// The schema parts of the man pages. The pages themselves are checked in
/// (`man/`); the test below fails when they drift from the schema, and
/// `RECEPTOR_REGEN_MAN=1 cargo test --lib man_pages` rewrites them.
#[cfg(test)]
pub(crate) mod man {
    use std::fmt::Write as _;

    use super::NOT_YET;
    use crate::config::schema::{DIRECTIVES, DirectiveSpec, Section};
    use crate::config::v2::{SECTIONS, Shape};

    /// Escapes text for roff: backslashes, hyphens (so that they are real
    /// minus signs in options) and a leading control character.
    pub(crate) fn roff(text: &str) -> String {
        let escaped = text.replace('\\', "\\e").replace('-', "\\-");
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            format!("\\&{escaped}")
        } else {
            escaped
        }
    }

    /// Where a generated part of a man page goes: between
    /// `.\" BEGIN GENERATED <name>` and `.\" END GENERATED <name>`.
    pub(crate) const MAN_PARTS: &[(&str, &str)] = &[
        ("man/receptor.8", "cert-tools"),
        ("man/receptor.conf.5", "directives"),
        ("man/receptor.conf.5", "v2-sections"),
    ];

    /// The roff text of one generated part (see [`MAN_PARTS`]).
    pub(crate) fn man_part(name: &str) -> String {
        match name {
            "cert-tools" => man_directives(|s| s == Section::Certificates, false),
            "directives" => man_directives(|_| true, true),
            "v2-sections" => man_v2_sections(),
            _ => String::new(),
        }
    }

    /// Replaces every generated part of a man page's text by what the schema
    /// says now. Returns `None` when a marker is missing.
    pub(crate) fn render_man_page(page: &str) -> Option<String> {
        let mut out = page.to_string();
        for (_, name) in MAN_PARTS {
            let begin = format!(".\\\" BEGIN GENERATED {name}\n");
            let end = format!(".\\\" END GENERATED {name}\n");
            if !page.contains(&begin) {
                continue;
            }
            let start = out.find(&begin)? + begin.len();
            let stop = start + out[start..].find(&end)?;
            out.replace_range(start..stop, &man_part(name));
        }
        Some(out)
    }

    fn man_directives(wanted: impl Fn(Section) -> bool, headings: bool) -> String {
        let mut out = String::new();
        for section in Section::ALL.into_iter().filter(|s| wanted(*s)) {
            if headings {
                let heading = section
                    .heading()
                    .map(|h| h.trim_end_matches(':').replace("Commands", "Directives"))
                    .unwrap_or_else(|| "General directives".to_string());
                let _ = writeln!(out, ".SS \"{}\"", roff(&heading));
            }
            for d in DIRECTIVES
                .iter()
                .filter(|d| d.section == section && !d.hidden)
            {
                man_directive(&mut out, d);
            }
        }
        out
    }

    fn man_v2_sections() -> String {
        let mut out = String::new();
        for sec in SECTIONS {
            let form = match sec.shape {
                Shape::One => "A map of the fields of",
                Shape::List => "A list of maps of the fields of",
            };
            let _ = writeln!(
                out,
                ".TP\n.B {}\n{form}\n.BR {} .",
                roff(sec.key),
                roff(sec.directive)
            );
        }
        out
    }

    fn man_directive(out: &mut String, d: &DirectiveSpec) {
        let _ = writeln!(out, ".TP\n.B {}\n{}.", roff(d.name), roff(d.description));
        let mut notes = Vec::new();
        if d.required {
            notes.push("Always present: added with defaults when not given.");
        }
        if d.singleton {
            notes.push("May be given once.");
        }
        if d.exclusive {
            notes.push("Must be the only directive given.");
        }
        if NOT_YET.contains(&d.name) {
            notes.push("Not supported yet: checked, then refused at startup.");
        }
        for note in notes {
            let _ = writeln!(out, "{}", roff(note));
        }
        if d.fields.is_empty() {
            let _ = writeln!(out, "No fields.");
            return;
        }
        out.push_str(".RS\n");
        for f in d.fields {
            let _ = writeln!(
                out,
                ".TP\n\\fB{}\\fR: \\fI{}\\fR\n{}.",
                roff(f.name),
                roff(f.ty.help_name()),
                roff(f.description)
            );
            if f.required {
                out.push_str("Required.\n");
            }
            if let Some(default) = f.default {
                let _ = writeln!(out, "Default: \\fB\\%{}\\fR.", roff(default));
            }
            if f.bare {
                out.push_str("May also be given as a bare value.\n");
            }
        }
        out.push_str(".RE\n");
    }
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
        assert!(script.contains(" --completion "));
    }

    #[test]
    fn zsh_completion_mentions_directives() {
        let script = zsh_completion();
        assert!(script.starts_with("#compdef receptor\n"));
        assert!(script.contains("    --tcp-listener) compadd -S '' -- bindaddr= port="));
        assert!(!script.contains("command-runner"));
        assert!(script.contains("compdef _receptor receptor"));
    }

    #[test]
    fn completion_flag_picks_the_shell() {
        use crate::config::{Invocation, parse_args};
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let run = |s: &str| parse_args(&args(s));
        assert_eq!(
            run("--completion bash"),
            Ok(Invocation::Help(bash_completion()))
        );
        assert_eq!(
            run("--completion zsh"),
            Ok(Invocation::Help(zsh_completion()))
        );
        assert!(run("--completion fish").is_err());
        assert!(run("--completion").is_err());
    }

    /// The checked-in man pages carry the schema's directives and fields as
    /// of now; `RECEPTOR_REGEN_MAN=1 cargo test --lib man_pages` rewrites
    /// their generated parts after a schema change.
    #[test]
    fn man_pages_match_schema() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let regen = std::env::var_os("RECEPTOR_REGEN_MAN").is_some();
        for (path, part) in man::MAN_PARTS {
            let file = root.join(path);
            let page = std::fs::read_to_string(&file).expect("man page");
            let want = man::render_man_page(&page).expect("generated markers");
            assert!(want.contains(&man::man_part(part)), "{path}: {part}");
            if regen {
                std::fs::write(&file, &want).expect("write man page");
            } else {
                assert!(
                    page == want,
                    "{path} differs from the schema: run \
                     RECEPTOR_REGEN_MAN=1 cargo test --lib man_pages"
                );
            }
        }
        let conf = std::fs::read_to_string(root.join("man/receptor.conf.5")).unwrap();
        for d in DIRECTIVES.iter().filter(|d| !d.hidden) {
            assert!(
                conf.contains(&format!(".B {}\n", man_name(d.name))),
                "{}",
                d.name
            );
        }
        // receptor(8) documents every option that --help lists.
        let page8 = std::fs::read_to_string(root.join("man/receptor.8")).unwrap();
        for option in [
            "--help",
            "--config",
            "--bash-completion",
            "--completion",
            "--version",
            "--config-v2",
        ] {
            let helped = help_text().contains(option) || v2_help_text().contains(option);
            assert!(helped || option == "--version");
            assert!(page8.contains(&man_name(option)), "{option}");
        }
    }

    fn man_name(name: &str) -> String {
        name.replace('-', "\\-")
    }

    #[test]
    fn roff_escapes_control_characters() {
        assert_eq!(man::roff(".x-y\\z"), "\\&.x\\-y\\ez");
        assert_eq!(man::roff("'q"), "\\&'q");
    }
}
