//! The node firewall (docs/config.md §8): an ordered list of rules, each
//! matching a data message by its source and destination node and service;
//! the first rule that matches decides, and a message no rule matches is
//! accepted. Pure: the node asks [`Firewall::decide`] for every data
//! message it originates, receives or forwards, and acts on the answer.
//!
//! A matcher is an exact name, or `/re/` for a regular expression that must
//! match the whole name (`^re$`), in RE2 syntax as Go's `regexp` reads it.
//! Unlike Go, a regular expression that does not compile is an error when
//! the rules are built (Go silently turns such a field into "match
//! anything"). One difference remains by design of the regex engines: the
//! Perl classes `\d`, `\w`, `\s` and `\b` also match non-ASCII letters and
//! digits here, where Go's are ASCII only; node IDs and service names are
//! ASCII in practice.

use std::fmt;

use regex::Regex;

/// What happens to a matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    /// Dropped, and the sender is told with a `blocked by firewall`
    /// unreachable.
    Reject,
    /// Dropped silently; the sender times out.
    Drop,
}

/// One rule as written in the configuration; `None` or an empty field
/// matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSpec {
    pub from_node: Option<String>,
    pub to_node: Option<String>,
    pub from_service: Option<String>,
    pub to_service: Option<String>,
}

/// A rule that could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallError {
    /// The rule's position, counting from 1 as people do.
    pub rule: usize,
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for FirewallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "firewall rule #{}: {}: {}",
            self.rule, self.field, self.reason
        )
    }
}

impl std::error::Error for FirewallError {}

/// The names of one data message, as the firewall sees them.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub from_node: &'a str,
    pub from_service: &'a str,
    pub to_node: &'a str,
    pub to_service: &'a str,
}

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Pattern(Regex),
}

impl Matcher {
    fn parse(text: &str) -> Result<Option<Matcher>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let Some(inner) = text.strip_prefix('/') else {
            return Ok(Some(Matcher::Exact(text.to_string())));
        };
        let Some(re) = inner.strip_suffix('/').filter(|re| !re.is_empty()) else {
            return Err(format!(
                "regular expression {text:?} must be non-empty and enclosed in /.../"
            ));
        };
        // The group keeps alternations inside the anchors: `/a|b/` is
        // `^(?:a|b)$`, matching only a whole name (Go's `^a|b$` would not).
        Regex::new(&format!("^(?:{re})$"))
            .map(|r| Some(Matcher::Pattern(r)))
            .map_err(|e| format!("invalid regular expression {text:?}: {e}"))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == name,
            Matcher::Pattern(re) => re.is_match(name),
        }
    }
}

#[derive(Debug)]
struct Rule {
    action: Action,
    from_node: Option<Matcher>,
    to_node: Option<Matcher>,
    from_service: Option<Matcher>,
    to_service: Option<Matcher>,
}

impl Rule {
    fn matches(&self, p: &Packet<'_>) -> bool {
        let field = |m: &Option<Matcher>, name: &str| m.as_ref().is_none_or(|m| m.matches(name));
        field(&self.from_node, p.from_node)
            && field(&self.to_node, p.to_node)
            && field(&self.from_service, p.from_service)
            && field(&self.to_service, p.to_service)
    }
}

/// The node's rules, compiled.
#[derive(Debug, Default)]
pub struct Firewall {
    rules: Vec<Rule>,
}

impl Firewall {
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (Action, &'a RuleSpec)>,
    ) -> Result<Firewall, FirewallError> {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, (action, spec))| compile(i + 1, action, spec))
            .collect::<Result<_, _>>()?;
        Ok(Firewall { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn decide(&self, packet: &Packet<'_>) -> Action {
        self.rules
            .iter()
            .find(|r| r.matches(packet))
            .map_or(Action::Accept, |r| r.action)
    }
}

fn compile(rule: usize, action: Action, spec: &RuleSpec) -> Result<Rule, FirewallError> {
    let field = |field: &'static str, text: &Option<String>| {
        Matcher::parse(text.as_deref().unwrap_or_default()).map_err(|reason| FirewallError {
            rule,
            field,
            reason,
        })
    };
    Ok(Rule {
        action,
        from_node: field("fromnode", &spec.from_node)?,
        to_node: field("tonode", &spec.to_node)?,
        from_service: field("fromservice", &spec.from_service)?,
        to_service: field("toservice", &spec.to_service)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fields: [&str; 4]) -> RuleSpec {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        RuleSpec {
            from_node: opt(fields[0]),
            to_node: opt(fields[1]),
            from_service: opt(fields[2]),
            to_service: opt(fields[3]),
        }
    }

    fn packet<'a>(names: [&'a str; 4]) -> Packet<'a> {
        Packet {
            from_node: names[0],
            to_node: names[1],
            from_service: names[2],
            to_service: names[3],
        }
    }

    fn firewall(rules: &[(Action, RuleSpec)]) -> Firewall {
        Firewall::new(rules.iter().map(|(a, s)| (*a, s))).unwrap()
    }

    #[test]
    fn no_rules_accept_everything() {
        let fw = firewall(&[]);
        assert!(fw.is_empty());
        assert_eq!(fw.decide(&packet(["a", "b", "x", "y"])), Action::Accept);
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let fw = firewall(&[
            (Action::Accept, spec(["a", "", "", "ping"])),
            (Action::Reject, spec(["a", "", "", ""])),
            (Action::Drop, spec(["", "", "", ""])),
        ]);
        assert_eq!(fw.decide(&packet(["a", "b", "s1", "ping"])), Action::Accept);
        assert_eq!(
            fw.decide(&packet(["a", "b", "s1", "control"])),
            Action::Reject
        );
        assert_eq!(fw.decide(&packet(["c", "b", "s1", "ping"])), Action::Drop);
    }

    #[test]
    fn every_given_field_must_match() {
        let fw = firewall(&[(Action::Drop, spec(["a", "b", "x", "y"]))]);
        assert_eq!(fw.decide(&packet(["a", "b", "x", "y"])), Action::Drop);
        for miss in [
            ["z", "b", "x", "y"],
            ["a", "z", "x", "y"],
            ["a", "b", "z", "y"],
            ["a", "b", "x", "z"],
        ] {
            assert_eq!(fw.decide(&packet(miss)), Action::Accept, "{miss:?}");
        }
    }

    #[test]
    fn exact_names_are_case_sensitive_and_whole() {
        let fw = firewall(&[(Action::Drop, spec(["node1", "", "", ""]))]);
        assert_eq!(fw.decide(&packet(["Node1", "b", "", ""])), Action::Accept);
        assert_eq!(fw.decide(&packet(["node10", "b", "", ""])), Action::Accept);
    }

    #[test]
    fn regular_expressions_are_anchored_with_go_syntax() {
        let fw = firewall(&[
            (Action::Reject, spec(["/(?i)ex.*/", "", "", ""])),
            (Action::Drop, spec(["", "", "", "/ctl|work/"])),
        ]);
        assert_eq!(
            fw.decide(&packet(["EXECUTOR", "b", "", ""])),
            Action::Reject
        );
        assert_eq!(
            fw.decide(&packet(["an-executor", "b", "", ""])),
            Action::Accept
        );
        assert_eq!(fw.decide(&packet(["c", "b", "", "work"])), Action::Drop);
        // The alternation stays inside the anchors.
        assert_eq!(
            fw.decide(&packet(["c", "b", "", "workers"])),
            Action::Accept
        );
        assert_eq!(fw.decide(&packet(["c", "b", "", "xctl"])), Action::Accept);
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        let bad = [
            (Action::Drop, spec(["a", "", "", ""])),
            (Action::Drop, spec(["", "/(unclosed/", "", ""])),
        ];
        let err = Firewall::new(bad.iter().map(|(a, s)| (*a, s))).unwrap_err();
        assert_eq!((err.rule, err.field), (2, "tonode"));
        assert!(
            err.to_string()
                .starts_with("firewall rule #2: tonode: invalid regular expression")
        );
        for text in ["/", "//", "/abc"] {
            let rule = [(Action::Drop, spec(["", "", text, ""]))];
            let err = Firewall::new(rule.iter().map(|(a, s)| (*a, s))).unwrap_err();
            assert!(err.reason.contains("enclosed in /.../"), "{text}: {err}");
        }
    }
}
