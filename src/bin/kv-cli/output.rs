//! How answers are printed: raw bytes for a program reading a pipe, readable and quoted text
//! for a person at a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::command::Answer;

/// How values are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// The value's bytes exactly as stored, then one `\n` (as `redis-cli --raw`): the default
    /// when stdout is not a terminal, or with `--raw`.
    Raw,
    /// A value that is printable UTF-8 as it is; any other (empty, control characters,
    /// bytes that are not UTF-8) in double quotes with escapes that the prompt reads back
    /// (`"\x00\xff"`, `"a\nb"`), then `\n`: the default on a terminal, or with `--no-raw`.
    Readable,
}

impl Values {
    /// `--raw` or `--no-raw` when given, else raw unless stdout is a terminal.
    pub fn choose(raw: bool, no_raw: bool, stdout_is_terminal: bool) -> Values {
        match (raw, no_raw) {
            (true, _) => Values::Raw,
            (_, true) => Values::Readable,
            _ if stdout_is_terminal => Values::Readable,
            _ => Values::Raw,
        }
    }

    /// Writes `answer` to `out` and flushes it. A missing key is written as `(nil)`, as
    /// redis-cli does at its prompt (a one-shot command says so on stderr instead).
    ///
    /// # Errors
    /// Writing to `out` failed (a closed pipe, say).
    pub fn write(self, out: &mut impl Write, answer: &Answer) -> io::Result<()> {
        match answer {
            Answer::Stored => writeln!(out, "OK")?,
            Answer::Value(value) => {
                match self {
                    Values::Raw => out.write_all(value)?,
                    Values::Readable => out.write_all(readable(value).as_bytes())?,
                }
                writeln!(out)?;
            }
            Answer::Deleted => writeln!(out, "deleted")?,
            Answer::Missing => writeln!(out, "(nil)")?,
            Answer::Pong(rtt) => writeln!(out, "PONG in {:.3} ms", rtt.as_secs_f64() * 1e3)?,
            Answer::Stats(counters) => {
                for (name, value) in counters {
                    writeln!(out, "{name} {value}")?;
                }
            }
            Answer::PerServer(answers) => {
                for (addr, answer) in answers {
                    writeln!(out, "# {addr}")?;
                    match answer {
                        Ok(answer) => self.write(out, answer)?,
                        Err(err) => writeln!(out, "(error) {err}")?,
                    }
                }
            }
        }
        out.flush()
    }
}

/// `bytes` as they are when they are printable UTF-8 (not empty, no control character),
/// else [`quoted`].
pub fn readable(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => Cow::Borrowed(text),
        _ => Cow::Owned(quoted(bytes)),
    }
}

/// `bytes` in double quotes, as the prompt reads them back (`crate::line`): `\\` and `\"`
/// for themselves, `\n` `\r` `\t` `\a` `\b`, `\xHH` for each byte of another control
/// character and for each byte that is not part of valid UTF-8; printable characters,
/// non-ASCII ones included, as they are.
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                c if c.is_control() => {
                    let mut utf8 = [0; 4];
                    hex_escape(&mut out, c.encode_utf8(&mut utf8).as_bytes());
                }
                c => out.push(c),
            }
        }
        hex_escape(&mut out, chunk.invalid());
    }
    out.push('"');
    out
}

fn hex_escape(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\x{byte:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line;

    #[test]
    fn printable_text_is_shown_as_it_is() {
        assert_eq!(readable(b"hello world"), "hello world");
        assert_eq!(readable("héllo \"x\"".as_bytes()), "héllo \"x\"");
    }

    #[test]
    fn other_values_are_quoted_with_escapes() {
        assert_eq!(readable(b""), r#""""#);
        assert_eq!(readable(b"\x00\xff"), r#""\x00\xff""#);
        assert_eq!(readable(b"a\nb\t\"c\"\\"), r#""a\nb\t\"c\"\\""#);
        assert_eq!(readable("é\x1b\u{85}".as_bytes()), r#""é\x1b\xc2\x85""#);
    }

    #[test]
    fn a_quoted_value_types_back_to_the_same_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        for value in [&all[..], b"", "é\u{85}\"\\".as_bytes(), b"\xc3"] {
            let typed = quoted(value);
            assert_eq!(line::split(typed.as_bytes()), Ok(vec![value.to_vec()]));
        }
    }

    #[test]
    fn raw_is_the_bytes_then_a_newline() {
        let mut out = Vec::new();
        Values::Raw
            .write(
                &mut out,
                &Answer::Value(bytes::Bytes::from_static(b"\x00\xff\n")),
            )
            .expect("write to a Vec");
        assert_eq!(out, b"\x00\xff\n\n");
    }

    #[test]
    fn the_flags_win_over_the_terminal() {
        assert_eq!(Values::choose(false, false, true), Values::Readable);
        assert_eq!(Values::choose(false, false, false), Values::Raw);
        assert_eq!(Values::choose(true, false, true), Values::Raw);
        assert_eq!(Values::choose(false, true, false), Values::Readable);
    }
}
