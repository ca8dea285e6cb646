//! Splitting a parameter string into words like a POSIX shell does (quotes
//! and backslashes, no expansion), as Go's google/shlex does for commands.

#[derive(Debug, PartialEq, Eq)]
pub struct SplitError(pub &'static str);

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None => return Ok(words),
            // A comment runs to the end of the line, as in google/shlex.
            Some('#') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => break,
                '\\' => word.push(
                    chars
                        .next()
                        .ok_or(SplitError("EOF found after escape character"))?,
                ),
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError("EOF found when expecting closing quote")),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(
                            chars
                                .next()
                                .ok_or(SplitError("EOF found when expecting closing quote"))?,
                        ),
                        Some(c) => word.push(c),
                        None => return Err(SplitError("EOF found when expecting closing quote")),
                    }
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    fn ok(s: &str) -> Vec<String> {
        split(s).unwrap()
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("  a  b\tc\n"), ["a", "b", "c"]);
        assert_eq!(
            ok(r#"-c "cat; sleep 3; echo done""#),
            ["-c", "cat; sleep 3; echo done"]
        );
        assert_eq!(ok("'it''s' x"), ["its", "x"]);
        assert_eq!(
            ok(r#"a\ b "q\"uote" 'back\slash'"#),
            ["a b", "q\"uote", "back\\slash"]
        );
        assert_eq!(ok(r#"x"y"'z'"#), ["xyz"]);
        assert_eq!(ok("a # comment\nb"), ["a", "b"]);
        assert_eq!(ok(r#""""#), [""]);
    }

    #[test]
    fn errors() {
        assert!(split("'open").is_err());
        assert!(split("\"open").is_err());
        assert!(split("trailing\\").is_err());
    }
}
