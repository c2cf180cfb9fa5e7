//! The ACL file: identities, their token hashes and the methods each may call.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::error::AclError;
use super::token::TokenTable;
use super::{Authenticator, Authorizer, Identity};

/// Identities, their tokens and the methods each may call, from a TOML file (the format is in
/// the [module documentation](super#the-acl-file)).
///
/// As an [`Authenticator`], an `Acl` maps a token to the identity whose `token_sha256` is the
/// token's SHA-256 (a [`TokenTable`]: constant-time, every entry compared). As an
/// [`Authorizer`], it allows an identity the methods its `allow` patterns match, whatever proved
/// the identity: a client certificate whose CN is `"reporter"` and a token whose entry is named
/// `"reporter"` get the same rules. An identity whose name is not in the file is allowed
/// nothing.
///
/// Patterns are checked and lower-cased when the file is read, so [`allows`](Acl::allows)
/// allocates nothing: it scans the identities for the name (an ACL holds few) and that
/// identity's patterns for the method name.
///
/// `Debug` shows each identity's name, whether it has a token and its patterns; never a token
/// hash.
#[derive(Clone)]
pub struct Acl {
    entries: Vec<Entry>,
    tokens: TokenTable,
}

#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    has_token: bool,
    rules: Box<[Rule]>,
}

/// One `allow` pattern, lower-cased.
#[derive(Clone, PartialEq, Eq)]
enum Rule {
    /// `*`.
    All,
    /// `<service>.*`, kept as `<service>.` (with the dot).
    Service(Box<str>),
    /// `<service>.<method>`.
    Method(Box<str>),
}

impl Rule {
    fn parse(pattern: &str) -> Result<Rule, &'static str> {
        if pattern == "*" {
            return Ok(Rule::All);
        }
        let Some((service, method)) = pattern.split_once('.') else {
            return Err("no '.' between service and method");
        };
        if service.is_empty() {
            return Err("the service is empty");
        }
        if method.is_empty() {
            return Err("the method is empty");
        }
        if pattern.contains(char::is_whitespace) {
            return Err("it contains whitespace");
        }
        if service.contains('*') {
            return Err("'*' cannot stand in a service name");
        }
        if method == "*" {
            let mut prefix = service.to_ascii_lowercase();
            prefix.push('.');
            return Ok(Rule::Service(prefix.into()));
        }
        if method.contains('*') {
            return Err("'*' can only be the whole method");
        }
        Ok(Rule::Method(pattern.to_ascii_lowercase().into()))
    }

    /// Whether the rule covers the method registered as `name`, ignoring ASCII case.
    fn matches(&self, name: &str) -> bool {
        match self {
            Rule::All => true,
            Rule::Service(prefix) => {
                name.len() > prefix.len()
                    && name
                        .as_bytes()
                        .get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
            }
            Rule::Method(full) => name.eq_ignore_ascii_case(full),
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::All => f.write_str("\"*\""),
            Rule::Service(prefix) => write!(f, "\"{prefix}*\""),
            Rule::Method(full) => write!(f, "{full:?}"),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("token", &self.has_token)
            .field("allow", &self.rules)
            .finish()
    }
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("identities", &self.entries)
            .finish_non_exhaustive()
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    identity: Vec<FileIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    name: Spanned<String>,
    #[serde(default)]
    token_sha256: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

impl Acl {
    /// Reads an ACL from TOML text.
    ///
    /// # Errors
    ///
    /// [`AclError::Syntax`] when `text` is not TOML or not shaped like an ACL (an unknown
    /// field, a missing `name`, a value of the wrong type); [`AclError::EmptyName`],
    /// [`AclError::DuplicateName`], [`AclError::BadTokenHash`], [`AclError::DuplicateToken`]
    /// and [`AclError::BadPattern`] for the entries' values. The errors' `path` is `None`.
    pub fn from_toml(text: &str) -> Result<Acl, AclError> {
        Acl::parse(text, None)
    }

    /// Reads the ACL file at `path` (UTF-8 TOML).
    ///
    /// # Errors
    ///
    /// [`AclError::Io`] when the file cannot be read (or is not UTF-8), and the errors of
    /// [`from_toml`](Acl::from_toml); every error names `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Acl, AclError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Acl::parse(&text, Some(path))
    }

    /// The number of identities in the ACL.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ACL holds no identity (then it authenticates no token and allows nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Acl, AclError> {
        let file_path = || path.map(Path::to_path_buf);
        let file: File = toml::from_str(text).map_err(|err| AclError::Syntax {
            path: file_path(),
            position: err.span().map(|span| position(text, span.start)),
            message: redact_strings(err.message().trim_end()).replace('\n', "; "),
        })?;
        let line = |spanned_start: usize| position(text, spanned_start).0;

        let mut entries: Vec<Entry> = Vec::with_capacity(file.identity.len());
        let mut lines: Vec<usize> = Vec::with_capacity(file.identity.len());
        let mut hashes: Vec<([u8; 32], usize)> = Vec::new();
        let mut tokens = TokenTable::new();
        for identity in file.identity {
            let name_line = line(identity.name.span().start);
            let name = identity.name.into_inner();
            if name.is_empty() {
                return Err(AclError::EmptyName {
                    path: file_path(),
                    line: name_line,
                });
            }
            if let Some(first) = entries.iter().position(|entry| *entry.name == *name) {
                return Err(AclError::DuplicateName {
                    path: file_path(),
                    line: name_line,
                    name,
                    first_line: lines[first],
                });
            }
            let name: Arc<str> = name.into();

            let hash = match identity.token_sha256 {
                None => None,
                Some(hex) => {
                    let hex_line = line(hex.span().start);
                    let Some(hash) = parse_sha256_hex(hex.get_ref()) else {
                        return Err(AclError::BadTokenHash {
                            path: file_path(),
                            line: hex_line,
                            name: name.to_string(),
                        });
                    };
                    if let Some(&(_, other)) = hashes.iter().find(|(known, _)| *known == hash) {
                        return Err(AclError::DuplicateToken {
                            path: file_path(),
                            line: hex_line,
                            name: name.to_string(),
                            other: entries[other].name.to_string(),
                        });
                    }
                    hashes.push((hash, entries.len()));
                    Some(hash)
                }
            };

            let mut rules = Vec::with_capacity(identity.allow.len());
            for (index, pattern) in identity.allow.iter().enumerate() {
                let rule =
                    Rule::parse(pattern.get_ref()).map_err(|reason| AclError::BadPattern {
                        path: file_path(),
                        line: line(pattern.span().start),
                        name: name.to_string(),
                        index: index + 1,
                        pattern: pattern.get_ref().clone(),
                        reason,
                    })?;
                rules.push(rule);
            }

            if let Some(hash) = hash {
                tokens.insert_shared(name.clone(), hash);
            }
            lines.push(name_line);
            entries.push(Entry {
                name,
                has_token: hash.is_some(),
                rules: rules.into_boxed_slice(),
            });
        }
        Ok(Acl { entries, tokens })
    }
}

impl Authenticator for Acl {
    /// The identity whose `token_sha256` is the SHA-256 of `token`, with
    /// [`IdentitySource::Token`](super::IdentitySource::Token); `None` for any other token and
    /// for an empty one.
    fn authenticate(&self, token: &[u8]) -> Option<Identity> {
        self.tokens.authenticate(token)
    }
}

impl Authorizer for Acl {
    /// Whether one of the `allow` patterns of the identity named `identity.name()` matches
    /// `name`, ignoring ASCII case; `false` when no identity has that name. The ids `service`
    /// and `method` are not used.
    fn allows(&self, identity: &Identity, _service: u16, _method: u16, name: &str) -> bool {
        self.entries
            .iter()
            .find(|entry| *entry.name == *identity.name())
            .is_some_and(|entry| entry.rules.iter().any(|rule| rule.matches(name)))
    }
}

/// 64 hex digits (either case) as 32 bytes.
fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

/// The line and column (both from 1; the column in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count the characters: every byte but UTF-8 continuation bytes.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count()
        + 1;
    (line, column)
}

/// `message` with each string value that serde quotes in it (`string "..."`, as in "invalid
/// type: string "...", expected a sequence") replaced by `a string`, so that a token written
/// into the wrong field is not repeated in the error.
fn redact_strings(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        let value = &rest[at + QUOTED.len()..];
        // The value is Debug-escaped: it ends at the first '"' not escaped by a '\'.
        let mut escaped = false;
        let end = value.char_indices().find_map(|(i, c)| match c {
            '\\' if !escaped => {
                escaped = true;
                None
            }
            '"' if !escaped => Some(i),
            _ => {
                escaped = false;
                None
            }
        });
        out.push_str("a string");
        match end {
            Some(end) => rest = &value[end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::{hash_token, IdentitySource};
    use super::*;

    const PASSWORD_SHA256: &str =
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    /// The example of the module documentation (and the design).
    const EXAMPLE: &str = r#"
# Each identity: a name, the SHA-256 of its token (optional: certificate identities have none),
# and the methods it may call.
[[identity]]
name = "alice"
token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"  # 64 hex digits
allow = ["kv.*", "admin.Stats"]

[[identity]]
name = "reporter"            # a client certificate whose subject CN is "reporter"
allow = ["kv.Get", "admin.*"]
"#;

    fn id(name: &str, source: IdentitySource) -> Identity {
        Identity::new(name, source)
    }

    fn allows(acl: &Acl, identity: &Identity, name: &str) -> bool {
        acl.allows(identity, 0, 0, name)
    }

    fn err(text: &str) -> AclError {
        match Acl::from_toml(text) {
            Ok(acl) => panic!("accepted: {acl:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn example_parses() {
        let acl = Acl::from_toml(EXAMPLE).expect("the example");
        assert_eq!(acl.len(), 2);
        assert!(!acl.is_empty());

        let alice = acl.authenticate(b"password").expect("alice's token");
        assert_eq!(alice, id("alice", IdentitySource::Token));
        for method in ["kv.Get", "kv.Set", "kv.Delete", "admin.Stats"] {
            assert!(allows(&acl, &alice, method), "alice {method}");
        }
        assert!(!allows(&acl, &alice, "echo.Echo"));
        assert!(!allows(&acl, &alice, "admin.Other"));

        let reporter = id("reporter", IdentitySource::Certificate);
        for method in ["kv.Get", "admin.Stats", "admin.Anything"] {
            assert!(allows(&acl, &reporter, method), "reporter {method}");
        }
        for method in ["kv.Set", "kv.Delete", "echo.Echo"] {
            assert!(!allows(&acl, &reporter, method), "reporter {method}");
        }
        assert!(acl.authenticate(b"reporter").is_none());
        assert!(acl.authenticate(b"").is_none());
        assert!(acl.authenticate(b"passwordx").is_none());
    }

    #[test]
    fn rules_apply_whatever_proved_the_name() {
        let acl = Acl::from_toml(EXAMPLE).unwrap();
        for source in [
            IdentitySource::Certificate,
            IdentitySource::Token,
            IdentitySource::Custom,
        ] {
            assert!(allows(&acl, &id("alice", source), "kv.Set"));
            assert!(allows(&acl, &id("reporter", source), "kv.Get"));
        }
    }

    #[test]
    fn unknown_identity_is_allowed_nothing() {
        let acl = Acl::from_toml("[[identity]]\nname = \"root\"\nallow = [\"*\"]\n").unwrap();
        assert!(allows(&acl, &id("root", IdentitySource::Custom), "kv.Get"));
        for name in ["mallory", "Root", "root ", ""] {
            let who = id(name, IdentitySource::Certificate);
            assert!(!allows(&acl, &who, "kv.Get"), "{name:?}");
            assert!(!allows(&acl, &who, "echo.Echo"), "{name:?}");
        }
        let empty = Acl::from_toml("").unwrap();
        assert!(empty.is_empty());
        assert!(!allows(
            &empty,
            &id("root", IdentitySource::Token),
            "kv.Get"
        ));
        assert!(empty.authenticate(b"password").is_none());
    }

    #[test]
    fn matching_ignores_ascii_case() {
        let acl = Acl::from_toml(
            r#"
            [[identity]]
            name = "a"
            allow = ["kv.GET", "ADMIN.*"]
            "#,
        )
        .unwrap();
        let a = id("a", IdentitySource::Token);
        for method in ["kv.Get", "KV.get", "kv.GET", "admin.Stats", "Admin.stats"] {
            assert!(allows(&acl, &a, method), "{method}");
        }
        for method in [
            "kv.Set",
            "kv.Gets",
            "kv.Ge",
            "adminx.Stats",
            "admin.",
            "admin",
        ] {
            assert!(!allows(&acl, &a, method), "{method}");
        }
    }

    #[test]
    fn star_and_service_star() {
        let acl = Acl::from_toml(
            r#"
            [[identity]]
            name = "root"
            allow = ["*"]
            [[identity]]
            name = "kv-user"
            allow = ["kv.*"]
            [[identity]]
            name = "nobody"
            allow = []
            "#,
        )
        .unwrap();
        let root = id("root", IdentitySource::Token);
        let kv = id("kv-user", IdentitySource::Token);
        let nobody = id("nobody", IdentitySource::Token);
        for method in ["kv.Get", "admin.Stats", "echo.Echo", "x"] {
            assert!(allows(&acl, &root, method), "{method}");
            assert!(!allows(&acl, &nobody, method), "{method}");
        }
        for method in ["kv.Get", "kv.Set", "kv.Delete", "Kv.Anything"] {
            assert!(allows(&acl, &kv, method), "{method}");
        }
        // "kv.*" is the service kv, not any name starting with "kv".
        for method in ["kvx.Get", "kv", "kv.", "admin.Stats", "echo.Echo"] {
            assert!(!allows(&acl, &kv, method), "{method}");
        }
    }

    #[test]
    fn token_and_certificate_identities_share_an_entry() {
        let acl = Acl::from_toml(&format!(
            "[[identity]]\nname = \"reporter\"\ntoken_sha256 = \"{}\"\nallow = [\"kv.Get\"]\n",
            PASSWORD_SHA256.to_ascii_uppercase()
        ))
        .unwrap();
        let by_token = acl.authenticate(b"password").unwrap();
        assert_eq!(by_token, id("reporter", IdentitySource::Token));
        assert!(allows(&acl, &by_token, "kv.Get"));
        assert!(allows(
            &acl,
            &id("reporter", IdentitySource::Certificate),
            "kv.Get"
        ));
    }

    #[test]
    fn token_hashes_are_read_from_hex() {
        let hash = hash_token(b"s3cret-token");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha256_hex(&hex), Some(hash));
        assert_eq!(parse_sha256_hex(&hex.to_ascii_uppercase()), Some(hash));
        assert_eq!(parse_sha256_hex(&hex[1..]), None);
        assert_eq!(parse_sha256_hex(&format!("{hex}0")), None);
        assert_eq!(parse_sha256_hex(&format!("g{}", &hex[1..])), None);
        assert_eq!(parse_sha256_hex(""), None);
        // 64 bytes, but not 64 ASCII characters.
        assert_eq!(parse_sha256_hex(&format!("é{}", &hex[2..])), None);
    }

    #[test]
    fn debug_shows_no_hash() {
        let acl = Acl::from_toml(EXAMPLE).unwrap();
        let debug = format!("{acl:?}");
        assert!(
            debug.contains("alice") && debug.contains("reporter"),
            "{debug}"
        );
        assert!(
            debug.contains("\"kv.*\"") && debug.contains("\"kv.get\""),
            "{debug}"
        );
        assert!(!debug.contains("5e8848"), "{debug}");
        assert!(!debug.contains("94, 136"), "{debug}");
        let pretty = format!("{acl:#?}");
        assert!(
            !pretty.contains("5e8848") && !pretty.contains("94,"),
            "{pretty}"
        );
    }

    #[test]
    fn syntax_errors_give_the_position_without_the_line() {
        let e = err("[[identity]]\nname = \"alice\"\nallow = [\"kv.*\"\n");
        match &e {
            AclError::Syntax {
                path: None,
                position: Some((line, _)),
                ..
            } => assert!(*line >= 3, "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("ACL: line "), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected_without_echoing_values() {
        let e = err("[[identity]]\nname = \"alice\"\ntoken = \"my-secret-token\"\n");
        let text = e.to_string();
        assert!(matches!(e, AclError::Syntax { .. }), "{e:?}");
        assert!(text.contains("unknown field `token`"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(!text.contains("my-secret-token"), "{text}");
        assert!(!format!("{e:?}").contains("my-secret-token"), "{e:?}");

        let e = err("[[identities]]\nname = \"alice\"\n");
        assert!(e.to_string().contains("unknown field `identities`"), "{e}");

        // A string where an array belongs: the value is not repeated either.
        let e = err("[[identity]]\nname = \"alice\"\nallow = \"my-secret-token\"\n");
        assert!(matches!(e, AclError::Syntax { .. }), "{e:?}");
        assert!(!e.to_string().contains("my-secret-token"), "{e}");
        assert!(e.to_string().contains("a string"), "{e}");

        let e = err("[[identity]]\nallow = []\n");
        assert!(e.to_string().contains("missing field `name`"), "{e}");
    }

    #[test]
    fn redacts_quoted_strings() {
        assert_eq!(
            redact_strings(r#"invalid type: string "a\"b\\", expected a sequence"#),
            "invalid type: a string, expected a sequence"
        );
        assert_eq!(redact_strings("unknown field `x`"), "unknown field `x`");
        assert_eq!(redact_strings(r#"string "unterminated"#), "a string");
    }

    #[test]
    fn empty_name_is_rejected() {
        let e = err("[[identity]]\nname = \"\"\nallow = []\n");
        assert!(matches!(e, AclError::EmptyName { line: 2, .. }), "{e:?}");
        assert_eq!(e.to_string(), "ACL: line 2: an identity's name is empty");
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let e = err("[[identity]]\nname = \"a\"\n\n[[identity]]\nname = \"a\"\n");
        match &e {
            AclError::DuplicateName {
                line: 5,
                name,
                first_line: 2,
                ..
            } => assert_eq!(name, "a"),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("already defined at line 2"), "{e}");
    }

    #[test]
    fn duplicate_token_hash_is_rejected() {
        let text = format!(
            "[[identity]]\nname = \"a\"\ntoken_sha256 = \"{PASSWORD_SHA256}\"\n\
             [[identity]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
            PASSWORD_SHA256.to_ascii_uppercase()
        );
        let e = err(&text);
        match &e {
            AclError::DuplicateToken {
                line: 6,
                name,
                other,
                ..
            } => assert_eq!((name.as_str(), other.as_str()), ("b", "a")),
            other => panic!("{other:?}"),
        }
        let message = e.to_string();
        assert!(
            !message.to_ascii_lowercase().contains("5e8848"),
            "{message}"
        );
    }

    #[test]
    fn bad_token_hashes_are_rejected_without_echoing_them() {
        for bad in [
            "my-secret-token",
            &PASSWORD_SHA256[..63],
            &format!("{PASSWORD_SHA256}0"),
            &format!("{}x", &PASSWORD_SHA256[..63]),
            "",
        ] {
            let e = err(&format!(
                "[[identity]]\nname = \"a\"\ntoken_sha256 = \"{bad}\"\n"
            ));
            assert!(matches!(e, AclError::BadTokenHash { line: 3, .. }), "{e:?}");
            let message = e.to_string();
            assert!(message.contains("64 hex digits"), "{message}");
            if !bad.is_empty() {
                assert!(!message.contains(bad), "{message}");
                assert!(!format!("{e:?}").contains(bad), "{e:?}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "", "kv", "kv.", ".Get", ".*", "*.Get", "k*.Get", "kv.G*", "kv.**", "**", "kv. Get",
            "kv .Get", " kv.Get", "kv.Get\t",
        ] {
            let e = err(&format!(
                "[[identity]]\nname = \"a\"\nallow = [\n  \"kv.Get\",\n  {bad:?},\n]\n"
            ));
            match &e {
                AclError::BadPattern {
                    line: 5,
                    index: 2,
                    name,
                    pattern,
                    ..
                } => {
                    assert_eq!(name, "a");
                    assert_eq!(pattern, bad);
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            // Shown only when it looks like a pattern (a token pasted there is not echoed).
            let text = e.to_string();
            if bad.contains('.') {
                assert!(text.contains(&format!("bad pattern {bad:?}")), "{text}");
            } else {
                assert!(text.contains("bad pattern #2 of allow"), "{text}");
            }
        }
        for good in ["*", "kv.*", "kv.Get", "a.b.c", "é.ü"] {
            let acl = Acl::from_toml(&format!("[[identity]]\nname = \"a\"\nallow = [{good:?}]\n"));
            assert!(acl.is_ok(), "{good:?}: {acl:?}");
        }
    }

    #[test]
    fn a_token_in_allow_is_not_echoed() {
        let token = "c2VjcmV0LXRva2VuLWluLXRoZS13cm9uZy1wbGFjZQ";
        let e = err(&format!(
            "[[identity]]\nname = \"a\"\nallow = [\"kv.*\", \"admin.Stats\", {token:?}]\n"
        ));
        assert!(matches!(e, AclError::BadPattern { index: 3, .. }), "{e:?}");
        for shown in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
            assert!(!shown.contains(token), "{shown}");
        }
        assert!(e
            .to_string()
            .contains("line 3: identity \"a\": bad pattern #3 of allow"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("courier-acl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good.toml");
        std::fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(Acl::load(&good).unwrap().len(), 2);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[identity]]\nname = \"a\"\nallow = [\"kv\"]\n").unwrap();
        let e = Acl::load(&bad).unwrap_err();
        assert!(matches!(&e, AclError::BadPattern { path: Some(p), .. } if *p == bad));
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");

        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "[[identity]\n").unwrap();
        let e = Acl::load(&broken).unwrap_err();
        assert!(matches!(&e, AclError::Syntax { path: Some(p), .. } if *p == broken));
        assert!(e.to_string().contains(&broken.display().to_string()), "{e}");

        let missing = dir.join("missing.toml");
        let e = Acl::load(&missing).unwrap_err();
        assert!(
            matches!(&e, AclError::Io { path, .. } if *path == missing),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\néé x\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 2), (1, 3));
        assert_eq!(position(text, 3), (2, 1));
        assert_eq!(position(text, 8), (2, 4));
        assert_eq!(position(text, 100), (3, 1));
    }
}
