//! [`AclError`]: why an ACL could not be read.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Patterns this long or longer are never shown in an error: a pattern is a short method
/// name, a token pasted into `allow` by mistake is not.
const MAX_SHOWN_PATTERN: usize = 64;

/// Why an ACL could not be read. Never shows a token or a token hash: neither its `Display`
/// nor its `Debug`.
///
/// Every variant but `Io` carries `path`: the file, when the ACL came from
/// [`Acl::load`](super::Acl::load) (`None` from [`Acl::from_toml`](super::Acl::from_toml)),
/// and a line number (from 1) in the TOML text.
#[non_exhaustive]
pub enum AclError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The error (`InvalidData` when the file is not UTF-8).
        source: io::Error,
    },
    /// The text is not TOML, or not shaped like an ACL: an unknown field, a missing `name`, a
    /// value of the wrong type.
    Syntax {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line and column (both from 1, the column in characters) where the toml crate
        /// places the error, when it does.
        position: Option<(usize, usize)>,
        /// The toml crate's message, on one line (its lines joined by `; `), without the line's
        /// text, which could hold a token written into the file by mistake; a string value
        /// quoted in the message reads `a string`.
        message: String,
    },
    /// An identity's `name` is `""`.
    EmptyName {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line of the `name`.
        line: usize,
    },
    /// Two identities have the same `name`.
    DuplicateName {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line of the second `name`.
        line: usize,
        /// The name.
        name: String,
        /// The line of the first.
        first_line: usize,
    },
    /// A `token_sha256` is not 64 hex digits.
    BadTokenHash {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line of the `token_sha256`.
        line: usize,
        /// The identity's name.
        name: String,
    },
    /// Two identities have the same `token_sha256` (so one token would prove both).
    DuplicateToken {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line of the second `token_sha256`.
        line: usize,
        /// The identity of the second.
        name: String,
        /// The identity of the first.
        other: String,
    },
    /// An `allow` pattern is not `*`, `<service>.*` or `<service>.<method>` (service and method
    /// not empty, without `*` or whitespace).
    ///
    /// `Display` and `Debug` show the pattern only when it looks like one (it contains a `.`,
    /// or is `*`, and is shorter than 64 bytes); otherwise they name it by its place in the
    /// list ("pattern #2 of allow"), since it could be a token pasted there by mistake.
    BadPattern {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The line of the pattern.
        line: usize,
        /// The identity's name.
        name: String,
        /// The pattern's place in the identity's `allow` list, from 1.
        index: usize,
        /// The pattern as written (see above before printing it).
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// `pattern`, if it may be shown in an error: it looks like a pattern (it contains a `.` or is
/// `*`) and is short, so it is not a token pasted into `allow`.
fn shown_pattern(pattern: &str) -> Option<&str> {
    let looks_like_one = pattern.contains('.') || pattern == "*";
    (looks_like_one && pattern.len() < MAX_SHOWN_PATTERN).then_some(pattern)
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn file(f: &mut fmt::Formatter<'_>, path: Option<&PathBuf>) -> fmt::Result {
            match path {
                Some(path) => write!(f, "ACL file {}: ", path.display()),
                None => f.write_str("ACL: "),
            }
        }
        match self {
            AclError::Io { path, source } => {
                write!(f, "cannot read ACL file {}: {source}", path.display())
            }
            AclError::Syntax {
                path,
                position,
                message,
            } => {
                file(f, path.as_ref())?;
                if let Some((line, column)) = position {
                    write!(f, "line {line}, column {column}: ")?;
                }
                f.write_str(message)
            }
            AclError::EmptyName { path, line } => {
                file(f, path.as_ref())?;
                write!(f, "line {line}: an identity's name is empty")
            }
            AclError::DuplicateName {
                path,
                line,
                name,
                first_line,
            } => {
                file(f, path.as_ref())?;
                write!(
                    f,
                    "line {line}: identity {name:?} is already defined at line {first_line}"
                )
            }
            AclError::BadTokenHash { path, line, name } => {
                file(f, path.as_ref())?;
                write!(
                    f,
                    "line {line}: identity {name:?}: token_sha256 must be 64 hex digits \
                     (the SHA-256 of the token, never the token itself)"
                )
            }
            AclError::DuplicateToken {
                path,
                line,
                name,
                other,
            } => {
                file(f, path.as_ref())?;
                write!(
                    f,
                    "line {line}: identity {name:?} has the same token_sha256 as identity \
                     {other:?}; each token must prove one identity"
                )
            }
            AclError::BadPattern {
                path,
                line,
                name,
                index,
                pattern,
                reason,
            } => {
                file(f, path.as_ref())?;
                write!(f, "line {line}: identity {name:?}: bad ")?;
                match shown_pattern(pattern) {
                    Some(pattern) => write!(f, "pattern {pattern:?}")?,
                    None => write!(f, "pattern #{index} of allow")?,
                }
                write!(
                    f,
                    " ({reason}); a pattern is \"*\", \"<service>.*\" or \"<service>.<method>\""
                )
            }
        }
    }
}

/// As a derived `Debug`, but a `BadPattern`'s pattern is shown only as `Display` shows it.
impl fmt::Debug for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclError::Io { path, source } => f
                .debug_struct("Io")
                .field("path", path)
                .field("source", source)
                .finish(),
            AclError::Syntax {
                path,
                position,
                message,
            } => f
                .debug_struct("Syntax")
                .field("path", path)
                .field("position", position)
                .field("message", message)
                .finish(),
            AclError::EmptyName { path, line } => f
                .debug_struct("EmptyName")
                .field("path", path)
                .field("line", line)
                .finish(),
            AclError::DuplicateName {
                path,
                line,
                name,
                first_line,
            } => f
                .debug_struct("DuplicateName")
                .field("path", path)
                .field("line", line)
                .field("name", name)
                .field("first_line", first_line)
                .finish(),
            AclError::BadTokenHash { path, line, name } => f
                .debug_struct("BadTokenHash")
                .field("path", path)
                .field("line", line)
                .field("name", name)
                .finish(),
            AclError::DuplicateToken {
                path,
                line,
                name,
                other,
            } => f
                .debug_struct("DuplicateToken")
                .field("path", path)
                .field("line", line)
                .field("name", name)
                .field("other", other)
                .finish(),
            AclError::BadPattern {
                path,
                line,
                name,
                index,
                pattern,
                reason,
            } => {
                let redacted = Redacted(pattern.len());
                let shown = shown_pattern(pattern);
                let pattern: &dyn fmt::Debug = match &shown {
                    Some(pattern) => pattern,
                    None => &redacted,
                };
                f.debug_struct("BadPattern")
                    .field("path", path)
                    .field("line", line)
                    .field("name", name)
                    .field("index", index)
                    .field("pattern", pattern)
                    .field("reason", reason)
                    .finish()
            }
        }
    }
}

/// A pattern left out of `Debug`: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl std::error::Error for AclError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AclError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_pattern(pattern: &str) -> AclError {
        AclError::BadPattern {
            path: None,
            line: 4,
            name: "alice".to_string(),
            index: 2,
            pattern: pattern.to_string(),
            reason: "no '.' between service and method",
        }
    }

    #[test]
    fn patterns_that_look_like_patterns_are_shown() {
        for pattern in [
            "kv.G*",
            "*.Get",
            "kv. Get",
            &format!("kv.{}", "a".repeat(60)),
        ] {
            let e = bad_pattern(pattern);
            let quoted = format!("{pattern:?}");
            assert!(e.to_string().contains(&quoted), "{e}");
            assert!(!e.to_string().contains("#2"), "{e}");
            assert!(format!("{e:?}").contains(&quoted), "{e:?}");
        }
        assert_eq!(
            bad_pattern("kv.").to_string(),
            "ACL: line 4: identity \"alice\": bad pattern \"kv.\" (no '.' between service and \
             method); a pattern is \"*\", \"<service>.*\" or \"<service>.<method>\""
        );
    }

    #[test]
    fn other_patterns_are_named_by_their_place() {
        let long = format!("kv.{}", "a".repeat(61));
        for secret in ["my-secret-token", "", "**", "c2VjcmV0LXRva2Vu", &long] {
            let e = bad_pattern(secret);
            let text = e.to_string();
            assert!(text.contains("bad pattern #2 of allow"), "{text}");
            let debug = format!("{e:?}");
            let pretty = format!("{e:#?}");
            if !secret.is_empty() {
                for shown in [&text, &debug, &pretty] {
                    assert!(!shown.contains(secret), "{shown}");
                }
            }
            assert!(debug.contains("<redacted"), "{debug}");
            assert!(debug.contains("index: 2"), "{debug}");
        }
        assert_eq!(
            bad_pattern("my-secret-token").to_string(),
            "ACL: line 4: identity \"alice\": bad pattern #2 of allow (no '.' between service \
             and method); a pattern is \"*\", \"<service>.*\" or \"<service>.<method>\""
        );
    }

    #[test]
    fn debug_matches_the_variants() {
        let e = AclError::EmptyName {
            path: Some(PathBuf::from("acl.toml")),
            line: 3,
        };
        assert_eq!(
            format!("{e:?}"),
            "EmptyName { path: Some(\"acl.toml\"), line: 3 }"
        );
        let e = AclError::DuplicateToken {
            path: None,
            line: 7,
            name: "b".to_string(),
            other: "a".to_string(),
        };
        assert_eq!(
            format!("{e:?}"),
            "DuplicateToken { path: None, line: 7, name: \"b\", other: \"a\" }"
        );
    }
}
