//! Tokens: their SHA-256 and the table that maps token hashes to names.

use std::fmt;
use std::sync::Arc;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{Authenticator, Identity, IdentitySource};

/// The SHA-256 (FIPS 180-4) of `token`: 32 bytes.
///
/// The form in which tokens are stored ([`TokenTable`], the ACL file's `token_sha256`), so a
/// leaked table or file does not give the tokens away; Redis ACL stores the SHA-256 of its
/// passwords for the same reason. Tokens should be long random strings (a SHA-256 of a short
/// or guessable token is easily reversed by trying candidates).
///
/// ```
/// let hash = courier_rpc::auth::hash_token(b"password");
/// assert_eq!(hash[..4], [0x5e, 0x88, 0x48, 0x98]);
/// ```
pub fn hash_token(token: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    let mut hash = [0u8; 32];
    // SHA-256 output is always 32 bytes.
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// An [`Authenticator`] holding token hashes ([`hash_token`]), each with the name of the
/// identity its token proves.
///
/// A token is hashed and the hash compared with every entry in constant time
/// (`subtle::ConstantTimeEq`), without stopping at a match, so how long authentication takes
/// says nothing about which entry matched or how much of a hash did. The identities it returns
/// have [`IdentitySource::Token`].
///
/// Each hash maps to one name; a name may have several hashes (several tokens, e.g. while a
/// token is being replaced). `Debug` shows the number of entries and the names, never a hash.
///
/// ```
/// use courier_rpc::auth::{Authenticator, TokenTable};
///
/// let mut tokens = TokenTable::new();
/// tokens.insert_token("alice", b"a long random token");
/// assert_eq!(tokens.authenticate(b"a long random token").unwrap().name(), "alice");
/// assert!(tokens.authenticate(b"a wrong token").is_none());
/// ```
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    hash: [u8; 32],
}

impl TokenTable {
    /// An empty table: it authenticates no token.
    pub fn new() -> Self {
        TokenTable::default()
    }

    /// Maps the token whose SHA-256 is `sha256` to `name`. A hash already in the table is
    /// mapped to `name` instead of its former name.
    ///
    /// An empty `name` is stored, but its token never authenticates
    /// ([`authenticate`](Authenticator::authenticate) returns `None` for it): an identity
    /// without a name proves nothing, and the server treats one as no identity. Mapping a
    /// hash to `""` thus revokes its token.
    pub fn insert_hash(&mut self, name: &str, sha256: [u8; 32]) {
        self.insert_shared(Arc::from(name), sha256);
    }

    /// Maps `token` to `name`: stores [`hash_token`]`(token)`, never the token. An empty token
    /// can be stored but never authenticates; neither does a token mapped to an empty name
    /// (see [`insert_hash`](Self::insert_hash)).
    pub fn insert_token(&mut self, name: &str, token: &[u8]) {
        self.insert_hash(name, hash_token(token));
    }

    /// The number of token hashes in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no token hash.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Like `insert_hash`, with a name that may be shared with others (an ACL entry's).
    pub(super) fn insert_shared(&mut self, name: Arc<str>, hash: [u8; 32]) {
        match self.entries.iter_mut().find(|entry| entry.hash == hash) {
            Some(entry) => entry.name = name,
            None => self.entries.push(Entry { name, hash }),
        }
    }
}

impl Authenticator for TokenTable {
    /// The identity whose token is `token`, or `None` (also for an empty token, and for a
    /// token mapped to an empty name).
    fn authenticate(&self, token: &[u8]) -> Option<Identity> {
        let hash = hash_token(token);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.hash[..].ct_eq(&hash[..]);
            index.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        if token.is_empty() || !bool::from(found) {
            return None;
        }
        let entry = self.entries.get(usize::try_from(index).ok()?)?;
        if entry.name.is_empty() {
            return None;
        }
        Some(Identity::new(entry.name.clone(), IdentitySource::Token))
    }
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|entry| &*entry.name).collect();
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .field("names", &names)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD_SHA256: &str =
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hash_matches_known_vectors() {
        assert_eq!(hex(&hash_token(b"password")), PASSWORD_SHA256);
        // FIPS 180-4 examples (NIST CSRC): "abc" and the empty message.
        assert_eq!(
            hex(&hash_token(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&hash_token(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn table() -> TokenTable {
        let mut tokens = TokenTable::new();
        tokens.insert_token("alice", b"alice-token");
        tokens.insert_token("bob", b"bob-token");
        tokens.insert_hash("carol", hash_token(b"carol-token"));
        tokens
    }

    #[test]
    fn tokens_authenticate_to_their_names() {
        let tokens = table();
        assert_eq!(tokens.len(), 3);
        assert!(!tokens.is_empty());
        for (token, name) in [
            (&b"alice-token"[..], "alice"),
            (b"bob-token", "bob"),
            (b"carol-token", "carol"),
        ] {
            let id = tokens.authenticate(token).expect("known token");
            assert_eq!(id, Identity::new(name, IdentitySource::Token));
        }
    }

    #[test]
    fn wrong_and_empty_tokens_authenticate_nobody() {
        let mut tokens = table();
        assert_eq!(tokens.authenticate(b"alice-token!"), None);
        assert_eq!(tokens.authenticate(b"alice-toke"), None);
        assert_eq!(tokens.authenticate(b""), None);
        // Even when the empty token's hash is in the table.
        tokens.insert_token("nobody", b"");
        assert_eq!(tokens.authenticate(b""), None);
        assert!(TokenTable::new().authenticate(b"alice-token").is_none());
        assert!(TokenTable::new().is_empty());
    }

    #[test]
    fn an_empty_name_never_authenticates() {
        let mut tokens = table();
        tokens.insert_token("", b"nameless-token");
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens.authenticate(b"nameless-token"), None);
        // Mapping a known hash to "" revokes its token; the others still work.
        tokens.insert_hash("", hash_token(b"alice-token"));
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens.authenticate(b"alice-token"), None);
        assert_eq!(tokens.authenticate(b"bob-token").unwrap().name(), "bob");
    }

    #[test]
    fn a_hash_maps_to_its_latest_name_and_a_name_may_have_several() {
        let mut tokens = table();
        tokens.insert_token("dave", b"alice-token");
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.authenticate(b"alice-token").unwrap().name(), "dave");
        tokens.insert_token("dave", b"second-token");
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens.authenticate(b"second-token").unwrap().name(), "dave");
        assert_eq!(tokens.authenticate(b"bob-token").unwrap().name(), "bob");
    }

    #[test]
    fn debug_shows_names_not_tokens_or_hashes() {
        let mut tokens = table();
        tokens.insert_hash("pw", hash_token(b"password"));
        let debug = format!("{tokens:?}");
        assert!(debug.contains("alice") && debug.contains("pw"), "{debug}");
        assert!(debug.contains("tokens: 4"), "{debug}");
        assert!(!debug.contains("password"), "{debug}");
        assert!(!debug.contains("-token"), "{debug}");
        assert!(!debug.contains(PASSWORD_SHA256), "{debug}");
        assert!(!debug.contains("5e"), "{debug}");
        // The hash's bytes in decimal (94, 136, ...) are not shown either.
        assert!(!debug.contains("94, 136"), "{debug}");
        assert!(!format!("{tokens:#?}").contains("94,"), "{tokens:#?}");
    }
}
