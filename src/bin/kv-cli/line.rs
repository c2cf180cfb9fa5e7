//! A typed line split into words, with redis-cli's quoting, so that values with spaces and
//! any bytes can be typed at the prompt or written in a file of commands.
//!
//! - Words are separated by ASCII whitespace (space, tab, CR, LF, form feed).
//! - `"..."`: a double-quoted part with the escapes `\n` `\r` `\t` `\b` `\a` `\\` `\"` and
//!   `\xHH` (one byte, two hex digits, either case); a backslash before any other character
//!   stands for that character (`\q` is `q`), as in redis-cli.
//! - `'...'`: a single-quoted part, taken as it is except `\'` for a quote.
//! - A quoted part may follow unquoted characters (`key"a b"` is `keya b`), and must be
//!   followed by whitespace or the end of the line.
//! - `""` is an empty word.

use std::fmt;

/// Why a line does not split into words.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// The line ended inside a quoted part opened with this quote character.
    Unterminated(char),
    /// A closing quote (this character) was followed by something other than whitespace or
    /// the end of the line.
    AfterQuote(char),
    /// `\x` inside double quotes without two hex digits after it.
    BadHexEscape,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Unterminated(quote) => write!(f, "unbalanced quotes: no closing {quote}"),
            LineError::AfterQuote(quote) => {
                write!(f, "a closing {quote} must be followed by a space")
            }
            LineError::BadHexEscape => f.write_str("\\x must be followed by two hex digits"),
        }
    }
}

impl std::error::Error for LineError {}

/// Where the splitter is inside a word.
enum State {
    Bare,
    Double,
    Single,
}

/// Splits `line` into words (see the module's docs for the quoting).
///
/// # Errors
/// An unterminated quote, a closing quote followed by a non-space, a bad `\x` escape.
pub fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, LineError> {
    let mut words = Vec::new();
    let mut rest = line;
    loop {
        while let [first, tail @ ..] = rest {
            if !first.is_ascii_whitespace() {
                break;
            }
            rest = tail;
        }
        if rest.is_empty() {
            return Ok(words);
        }
        let (word, after) = word(rest)?;
        words.push(word);
        rest = after;
    }
}

/// The word at the start of `line` (not empty, not starting with whitespace) and what
/// follows it.
fn word(mut line: &[u8]) -> Result<(Vec<u8>, &[u8]), LineError> {
    let mut word = Vec::new();
    let mut state = State::Bare;
    loop {
        let Some((&byte, tail)) = line.split_first() else {
            return match state {
                State::Bare => Ok((word, line)),
                State::Double => Err(LineError::Unterminated('"')),
                State::Single => Err(LineError::Unterminated('\'')),
            };
        };
        line = tail;
        match state {
            State::Bare => match byte {
                b'"' => state = State::Double,
                b'\'' => state = State::Single,
                b if b.is_ascii_whitespace() => return Ok((word, line)),
                b => word.push(b),
            },
            State::Double => match byte {
                b'\\' => {
                    let (escaped, tail) = escape(line)?;
                    word.push(escaped);
                    line = tail;
                }
                b'"' => {
                    closing(line, '"')?;
                    return Ok((word, line));
                }
                b => word.push(b),
            },
            State::Single => match (byte, line.first()) {
                (b'\\', Some(b'\'')) => {
                    word.push(b'\'');
                    line = &line[1..];
                }
                (b'\'', _) => {
                    closing(line, '\'')?;
                    return Ok((word, line));
                }
                (b, _) => word.push(b),
            },
        }
    }
}

/// The byte an escape inside double quotes stands for (`line` starts after the backslash),
/// and what follows the escape.
fn escape(line: &[u8]) -> Result<(u8, &[u8]), LineError> {
    match line {
        [b'x', high, low, tail @ ..] => match (hex(*high), hex(*low)) {
            (Some(high), Some(low)) => Ok(((high << 4) | low, tail)),
            _ => Err(LineError::BadHexEscape),
        },
        [b'x', ..] => Err(LineError::BadHexEscape),
        [b'n', tail @ ..] => Ok((b'\n', tail)),
        [b'r', tail @ ..] => Ok((b'\r', tail)),
        [b't', tail @ ..] => Ok((b'\t', tail)),
        [b'b', tail @ ..] => Ok((0x08, tail)),
        [b'a', tail @ ..] => Ok((0x07, tail)),
        [other, tail @ ..] => Ok((*other, tail)),
        [] => Err(LineError::Unterminated('"')),
    }
}

/// A closing quote must end the word.
fn closing(after: &[u8], quote: char) -> Result<(), LineError> {
    match after.first() {
        Some(b) if !b.is_ascii_whitespace() => Err(LineError::AfterQuote(quote)),
        _ => Ok(()),
    }
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<u8>> {
        split(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn bare_words_split_on_any_whitespace() {
        assert_eq!(
            words("set k v"),
            [b"set".to_vec(), b"k".to_vec(), b"v".to_vec()]
        );
        assert_eq!(
            words("  get\t key \r\n"),
            [b"get".to_vec(), b"key".to_vec()]
        );
        assert!(words("").is_empty());
        assert!(words("   \t ").is_empty());
    }

    #[test]
    fn double_quotes_keep_spaces_and_decode_escapes() {
        assert_eq!(
            words(r#"set "my key" "a \"quoted\" value\n""#),
            [
                b"set".to_vec(),
                b"my key".to_vec(),
                b"a \"quoted\" value\n".to_vec()
            ]
        );
        assert_eq!(
            words(r#""\x00\xff\xAb\r\t\b\a\\\q""#),
            [vec![
                0x00, 0xff, 0xab, b'\r', b'\t', 0x08, 0x07, b'\\', b'q'
            ]]
        );
    }

    #[test]
    fn single_quotes_are_literal_but_for_an_escaped_quote() {
        assert_eq!(
            words(r"'a\nb' 'it\'s'"),
            [br"a\nb".to_vec(), b"it's".to_vec()]
        );
    }

    #[test]
    fn empty_quotes_are_an_empty_word() {
        assert_eq!(words(r#"set "" ''"#), [b"set".to_vec(), vec![], vec![]]);
    }

    #[test]
    fn a_quoted_part_may_follow_bare_characters() {
        assert_eq!(words(r#"key"a b" x"#), [b"keya b".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn bytes_outside_ascii_pass_through() {
        assert_eq!(
            split(b"get \xc3\xa9\xff").expect("splits")[1],
            b"\xc3\xa9\xff"
        );
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert_eq!(split(br#"set k "abc"#), Err(LineError::Unterminated('"')));
        assert_eq!(split(b"set k 'abc"), Err(LineError::Unterminated('\'')));
        // A backslash at the end escapes nothing and leaves the quote open.
        assert_eq!(split(br#"set k "abc\"#), Err(LineError::Unterminated('"')));
        assert_eq!(split(br#"set k "abc\""#), Err(LineError::Unterminated('"')));
    }

    #[test]
    fn a_closing_quote_must_end_the_word() {
        assert_eq!(split(br#""ab"c"#), Err(LineError::AfterQuote('"')));
        assert_eq!(split(b"'ab'c"), Err(LineError::AfterQuote('\'')));
    }

    #[test]
    fn a_bad_hex_escape_is_an_error() {
        assert_eq!(split(br#""\xg0""#), Err(LineError::BadHexEscape));
        assert_eq!(split(br#""\x0""#), Err(LineError::BadHexEscape));
        assert_eq!(split(br#""\x"#), Err(LineError::BadHexEscape));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            LineError::Unterminated('"').to_string(),
            "unbalanced quotes: no closing \""
        );
    }
}
