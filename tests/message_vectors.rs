//! The library's message encodings against `proto-spec/vectors/messages.json`
//! (`proto-spec/SERVICES.md` Section 4), which `proto-spec/gen_message_vectors.py` writes from
//! RFC 8949 and RFC 8259 independently of the crates the library uses: every valid vector
//! decodes to its value and encodes back to the same bytes; every invalid one is refused.

use courier_rpc::{Bytes, Cbor, Json, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proto-spec/vectors/messages.json"
);

/// The types of SERVICES.md Section 4.3.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Role {
    Admin,
    Guest { until: u32 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct User {
    id: u32,
    name: String,
    roles: Vec<Role>,
    email: Option<String>,
    score: f64,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Decodes `bytes` as `M`, checks it against `value` (through `to_value`), encodes it again.
fn round_trip<M: Message>(bytes: &[u8], value: &Value, to_value: impl Fn(&M) -> Value) -> Vec<u8> {
    let message = M::decode(Bytes::copy_from_slice(bytes)).expect("a valid vector decodes");
    assert_eq!(&to_value(&message), value);
    let mut again = Vec::new();
    message.encode(&mut again).expect("encodes");
    again
}

fn serde_round_trip<T: Serialize + DeserializeOwned + Send + 'static>(
    encoding: &str,
    bytes: &[u8],
    value: &Value,
) -> Vec<u8> {
    let json = |t: &T| serde_json::to_value(t).expect("to JSON value");
    match encoding {
        "cbor" => round_trip::<Cbor<T>>(bytes, value, |m| json(&m.0)),
        "json" => round_trip::<Json<T>>(bytes, value, |m| json(&m.0)),
        other => panic!("unknown encoding {other}"),
    }
}

/// Decodes a vector as its type: `Ok(bytes encoded again)` or the decode error's text.
fn check(encoding: &str, ty: &str, bytes: &[u8], value: &Value) -> Result<Vec<u8>, String> {
    fn decode<M: Message>(bytes: &[u8]) -> Result<M, String> {
        M::decode(Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string())
    }
    if value.is_null() && ty != "()" {
        // An invalid vector: only whether it decodes matters.
        return match (encoding, ty) {
            ("fixed", "u32") => decode::<u32>(bytes).map(|_| vec![]),
            ("fixed", "u16") => decode::<u16>(bytes).map(|_| vec![]),
            ("fixed", "bool") => decode::<bool>(bytes).map(|_| vec![]),
            ("fixed", "String") => decode::<String>(bytes).map(|_| vec![]),
            ("cbor", "Role") => decode::<Cbor<Role>>(bytes).map(|_| vec![]),
            ("cbor", "User") => decode::<Cbor<User>>(bytes).map(|_| vec![]),
            ("json", "Role") => decode::<Json<Role>>(bytes).map(|_| vec![]),
            other => panic!("no type for {other:?}"),
        };
    }
    Ok(match (encoding, ty) {
        ("fixed", "u8") => round_trip::<u8>(bytes, value, |m| Value::from(*m)),
        ("fixed", "u16") => round_trip::<u16>(bytes, value, |m| Value::from(*m)),
        ("fixed", "u32") => round_trip::<u32>(bytes, value, |m| Value::from(*m)),
        ("fixed", "i32") => round_trip::<i32>(bytes, value, |m| Value::from(*m)),
        ("fixed", "u64") => round_trip::<u64>(bytes, value, |m| Value::from(*m)),
        ("fixed", "i64") => round_trip::<i64>(bytes, value, |m| Value::from(*m)),
        ("fixed", "bool") => round_trip::<bool>(bytes, value, |m| Value::from(*m)),
        ("fixed", "String") => round_trip::<String>(bytes, value, |m| Value::from(m.as_str())),
        ("fixed", "()") if bytes.is_empty() => round_trip::<()>(bytes, value, |()| Value::Null),
        ("fixed", "()") => return decode::<()>(bytes).map(|()| vec![]),
        (e, "User") => serde_round_trip::<User>(e, bytes, value),
        (e, "Role") => serde_round_trip::<Role>(e, bytes, value),
        (e, "Vec<i64>") => serde_round_trip::<Vec<i64>>(e, bytes, value),
        other => panic!("no type for {other:?}"),
    })
}

#[test]
fn every_message_vector() {
    let text = std::fs::read_to_string(VECTORS).expect("read messages.json");
    let doc: Value = serde_json::from_str(&text).expect("messages.json is JSON");
    let vectors = doc["vectors"].as_array().expect("a vectors array");
    assert!(vectors.len() >= 30, "{} vectors", vectors.len());
    let (mut valid, mut invalid) = (0, 0);
    for v in vectors {
        let name = v["name"].as_str().expect("name");
        let encoding = v["encoding"].as_str().expect("encoding");
        let ty = v["type"].as_str().expect("type");
        let bytes = hex(v["hex"].as_str().expect("hex"));
        if let Some(why) = v.get("error") {
            let result = check(encoding, ty, &bytes, &Value::Null);
            assert!(result.is_err(), "{name} ({why}) decoded");
            invalid += 1;
        } else {
            let again = check(encoding, ty, &bytes, &v["value"])
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(again, bytes, "{name}: encodes back to other bytes");
            valid += 1;
        }
    }
    assert_eq!((valid, invalid), (20, 10));
}
