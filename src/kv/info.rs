//! The answer of kv INFO ([`super::INFO`]): where the server keeps its data and how safely,
//! so that a client about to write a lot (a load generator) can tell a throwaway server
//! from one whose log it would fill.
//!
//! Wire layout (`proto-spec/SERVICES.md` Section 2.5, INFO): UTF-8 text, one `name value` line per
//! entry, as admin STATS:
//!
//! ```text
//! +------+-------+-------+-------+
//! | name | 0x20  | value | 0x0A  |   ... one line per entry
//! +------+-------+-------+-------+
//! storage memory|log
//! fsync   none|never|everysec|always
//! keys    decimal u64
//! ```

use std::fmt;

use bytes::{BufMut, Bytes};

use super::log::FsyncPolicy;
use crate::service::{Message, MessageError};

/// Where a kv server keeps its data: the `storage` line of [`KvInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `memory`: in memory only; everything is lost when the server stops
    /// (`kv-server --in-memory`, [`super::register`]).
    Memory,
    /// `log`: in memory and in an append-only log replayed on start
    /// ([`super::register_logged`]).
    Log,
}

impl Storage {
    /// The wire name: `"memory"` or `"log"`.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Log => "log",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer of kv INFO. Encoded as three lines, `storage`, `fsync`, `keys`, in that
/// order; decoding ignores lines whose name it does not know (a later server's), and
/// refuses a payload that lacks one of the three or has a value it does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvInfo {
    /// Where the data is kept.
    pub storage: Storage,
    /// When the log is fsynced; `None` (`fsync none`) when there is no log.
    pub fsync: Option<FsyncPolicy>,
    /// Keys in the store when the request was served (each shard counted in turn, so not
    /// one instant's count while writes go on).
    pub keys: u64,
}

impl Message for KvInfo {
    fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), MessageError> {
        let fsync = self
            .fsync
            .map_or_else(|| "none".to_string(), |p| p.to_string());
        for (name, value) in [
            ("storage", self.storage.name().to_string()),
            ("fsync", fsync),
            ("keys", self.keys.to_string()),
        ] {
            dst.put_slice(name.as_bytes());
            dst.put_u8(b' ');
            dst.put_slice(value.as_bytes());
            dst.put_u8(b'\n');
        }
        Ok(())
    }

    fn decode(src: Bytes) -> Result<Self, MessageError> {
        let text =
            std::str::from_utf8(&src).map_err(|_| MessageError::invalid("kv info is not UTF-8"))?;
        let (mut storage, mut fsync, mut keys) = (None, None, None);
        for line in text.lines() {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| MessageError::invalid(format!("bad kv info line {line:?}")))?;
            let bad = || MessageError::invalid(format!("bad kv info value in {line:?}"));
            match name {
                "storage" => {
                    storage = Some(match value {
                        "memory" => Storage::Memory,
                        "log" => Storage::Log,
                        _ => return Err(bad()),
                    })
                }
                "fsync" => {
                    fsync = Some(match value {
                        "none" => None,
                        policy => Some(policy.parse::<FsyncPolicy>().map_err(|_| bad())?),
                    })
                }
                "keys" => keys = Some(value.parse::<u64>().map_err(|_| bad())?),
                _ => {}
            }
        }
        let missing = |name: &str| MessageError::invalid(format!("kv info has no {name} line"));
        Ok(KvInfo {
            storage: storage.ok_or_else(|| missing("storage"))?,
            fsync: fsync.ok_or_else(|| missing("fsync"))?,
            keys: keys.ok_or_else(|| missing("keys"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_three_lines_and_decodes_them_back() {
        let info = KvInfo {
            storage: Storage::Log,
            fsync: Some(FsyncPolicy::Always),
            keys: 42,
        };
        let mut out = bytes::BytesMut::new();
        info.encode(&mut out).expect("encode");
        assert_eq!(&out[..], b"storage log\nfsync always\nkeys 42\n");
        assert_eq!(KvInfo::decode(out.freeze()), Ok(info));
    }

    #[test]
    fn decoding_ignores_unknown_names_and_refuses_missing_ones() {
        let text = "storage memory\nshards 64\nfsync none\nkeys 0\n";
        let info = KvInfo::decode(Bytes::from(text)).expect("decode");
        assert_eq!(info.storage, Storage::Memory);
        assert_eq!(info.fsync, None);
        assert!(KvInfo::decode(Bytes::from("storage memory\nkeys 0\n")).is_err());
        assert!(KvInfo::decode(Bytes::from("storage disk\nfsync none\nkeys 0\n")).is_err());
    }
}
