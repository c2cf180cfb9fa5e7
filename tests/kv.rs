//! The kv service over loopback: set, get, delete, limits and statuses.

mod support;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{
    Deleted, Key, SetRequest, Value, DELETE, GET, MAX_KEY_LEN, MAX_VALUE_LEN, SET,
};
use courier_rpc::proto::Code;

fn key(k: &str) -> Key {
    Key(Bytes::copy_from_slice(k.as_bytes()))
}

fn set(client: &mut Client, k: &[u8], v: &[u8]) -> Result<(), ClientError> {
    let request = SetRequest {
        key: Bytes::copy_from_slice(k),
        value: Bytes::copy_from_slice(v),
    };
    client.call(&SET, &request)
}

fn status_code(result: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match result {
        Err(ClientError::Status(s)) => s.code,
        other => panic!("expected a status, got {other:?}"),
    }
}

#[test]
fn set_get_delete_round_trip() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    set(&mut client, b"name", b"courier").expect("set");
    assert_eq!(
        client.call(&GET, &key("name")).expect("get"),
        Value(Bytes::from_static(b"courier"))
    );
    set(&mut client, b"name", b"").expect("overwrite with an empty value");
    assert_eq!(client.call(&GET, &key("name")).expect("get").0.len(), 0);
    assert_eq!(
        client.call(&DELETE, &key("name")).expect("del"),
        Deleted(true)
    );
    assert_eq!(
        client.call(&DELETE, &key("name")).expect("del"),
        Deleted(false)
    );
    assert_eq!(
        status_code(client.call(&GET, &key("name"))),
        Code::NOT_FOUND
    );
}

#[test]
fn values_are_shared_between_connections() {
    let server = support::start_default();
    let mut writer = Client::connect(server.local_addr()).expect("connect");
    let mut reader = Client::connect(server.local_addr()).expect("connect");
    let binary: Vec<u8> = (0..=255).collect();
    set(&mut writer, &binary, &binary).expect("set binary key and value");
    drop(writer);
    let got = reader
        .call(&GET, &Key(Bytes::from(binary.clone())))
        .expect("get from another connection");
    assert_eq!(&got.0[..], &binary[..]);
}

#[test]
fn keys_and_values_at_the_limits() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let long_key = vec![b'k'; MAX_KEY_LEN];
    let big_value = vec![7u8; MAX_VALUE_LEN];
    set(&mut client, &long_key, &big_value).expect("largest key and value are accepted");
    assert_eq!(
        client
            .call(&GET, &Key(Bytes::from(long_key)))
            .expect("get")
            .0
            .len(),
        MAX_VALUE_LEN
    );

    let too_long_key = vec![b'k'; MAX_KEY_LEN + 1];
    assert_eq!(
        status_code(set(&mut client, &too_long_key, b"v")),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        status_code(client.call(&GET, &Key(Bytes::from(too_long_key)))),
        Code::INVALID_ARGUMENT
    );
    let too_big_value = vec![0u8; MAX_VALUE_LEN + 1];
    assert_eq!(
        status_code(set(&mut client, b"k", &too_big_value)),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        status_code(set(&mut client, b"", b"v")),
        Code::INVALID_ARGUMENT
    );
    // The connection is still usable after every refusal.
    set(&mut client, b"after", b"refusals").expect("set after refusals");
}

#[test]
fn malformed_set_body_is_invalid_argument_and_the_connection_goes_on() {
    let server = support::start_default();
    let mut stream = support::raw_connect(server.local_addr());
    // SET whose key length (0x0100 = 256) runs past the 3 bytes that follow.
    let mut wire = support::encode(&support::request(1, 2, 2, &[0x01, 0x00, b'a', b'b', b'c']));
    wire.extend_from_slice(&support::encode(&support::request(2, 2, 1, b"missing")));
    support::send_raw(&mut stream, &wire);
    let frames = support::read_frames(&mut stream, 2);
    let codes: Vec<_> = frames
        .iter()
        .map(|f| match f {
            courier_rpc::proto::Frame::Response(r) => (r.request_id, r.code),
            other => panic!("expected responses, got {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![(1, Code::INVALID_ARGUMENT), (2, Code::NOT_FOUND)]
    );
}
