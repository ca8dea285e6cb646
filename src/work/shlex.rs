//! Splitting a parameter string into words like a POSIX shell does (quotes
//! and backslashes, no expansion), exactly as Go's google/shlex `Split`
//! does for `work-command` params.

/// Why a string could not be split; `Display` is google/shlex's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// A backslash ended the input, inside double quotes or not.
    EofAfterEscape,
    /// A single or double quote was never closed.
    EofInQuotes,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::EofAfterEscape => "EOF found after escape character",
            SplitError::EofInQuotes => "EOF found when expecting closing quote",
        })
    }
}

/// google/shlex separates words only with these; every other character,
/// other Unicode spaces included, belongs to a word.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|&c| is_space(c)).is_some() {}
        match chars.peek() {
            None => return Ok(words),
            // A comment starts only where a word would, and runs to the
            // end of the line.
            Some('#') => {
                chars.by_ref().find(|&c| c == '\n');
                continue;
            }
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if is_space(c) => break,
                '\\' => word.push(chars.next().ok_or(SplitError::EofAfterEscape)?),
                '\'' => loop {
                    match chars.next().ok_or(SplitError::EofInQuotes)? {
                        '\'' => break,
                        c => word.push(c),
                    }
                },
                // Inside double quotes a backslash makes any next character
                // literal, not only `"` and `\` as in POSIX.
                '"' => loop {
                    match chars.next().ok_or(SplitError::EofInQuotes)? {
                        '"' => break,
                        '\\' => word.push(chars.next().ok_or(SplitError::EofAfterEscape)?),
                        c => word.push(c),
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
    use super::{SplitError, split};

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

    /// Inputs and results captured from google/shlex `Split` (commit
    /// e7afc7f) run under Go; errors are its exact texts.
    const GO_SPLITS: &[(&str, Result<&[&str], &str>)] = &[
        ("a\u{a0}b", Ok(&["a\u{a0}b"])),
        ("a\u{b}b", Ok(&["a\u{b}b"])),
        ("a\u{c}b", Ok(&["a\u{c}b"])),
        ("a\u{85}b", Ok(&["a\u{85}b"])),
        ("a\u{1680}b", Ok(&["a\u{1680}b"])),
        ("a\u{2003}b", Ok(&["a\u{2003}b"])),
        ("a\u{3000}b", Ok(&["a\u{3000}b"])),
        ("a\tb\rc\nd e", Ok(&["a", "b", "c", "d", "e"])),
        ("trailing\\", Err("EOF found after escape character")),
        ("\"abc\\", Err("EOF found after escape character")),
        ("'open", Err("EOF found when expecting closing quote")),
        ("\"open", Err("EOF found when expecting closing quote")),
        ("\"a\" \"", Err("EOF found when expecting closing quote")),
        ("\"back\\slash\"", Ok(&["backslash"])),
        ("'back\\slash'", Ok(&["back\\slash"])),
        ("a#b #c\nd", Ok(&["a#b", "d"])),
        ("#only", Ok(&[])),
        ("a # c\r\nd", Ok(&["a", "d"])),
        ("''", Ok(&[""])),
        ("a\\\nb", Ok(&["a\nb"])),
        ("\"a\\\"b\"", Ok(&["a\"b"])),
        ("'a\\'", Ok(&["a\\"])),
        ("\\#x", Ok(&["#x"])),
        ("a\0b", Ok(&["a\0b"])),
        ("   ", Ok(&[])),
        ("é ü", Ok(&["é", "ü"])),
    ];

    fn go_text(r: Result<Vec<String>, SplitError>) -> Result<Vec<String>, String> {
        r.map_err(|e| e.to_string())
    }

    #[test]
    fn unicode_spaces_are_word_characters_as_in_go() {
        for (input, want) in GO_SPLITS {
            let want = want
                .map(|w| w.iter().map(|s| s.to_string()).collect())
                .map_err(str::to_string);
            assert_eq!(go_text(split(input)), want, "{input:?}");
        }
    }

    #[test]
    fn backslash_at_end_inside_double_quotes_is_an_escape_error() {
        assert_eq!(split("\"abc\\"), Err(SplitError::EofAfterEscape));
        assert_eq!(split("'abc"), Err(SplitError::EofInQuotes));
    }
}
