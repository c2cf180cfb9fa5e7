//! kv INFO over loopback: what an in-memory router and a kv-server with a log say about
//! where they keep their data (`proto-spec/SERVICES.md` Section 2.5).

mod support;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::log::FsyncPolicy;
use courier_rpc::kv::{KvInfo, SetRequest, Storage, INFO, SET};
use courier_rpc::proto::Code;
use support::kv_process::Server;
use support::TempDir;

fn set(client: &mut Client, key: &str) {
    let request = SetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
    };
    client.call(&SET, &request).expect("set");
}

#[test]
fn in_memory_store_says_memory_no_fsync_and_counts_its_keys() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let info = client.call(&INFO, &()).expect("info");
    assert_eq!(
        info,
        KvInfo {
            storage: Storage::Memory,
            fsync: None,
            keys: 0
        }
    );
    set(&mut client, "a");
    set(&mut client, "b");
    set(&mut client, "a");
    assert_eq!(client.call(&INFO, &()).expect("info").keys, 2);
}

#[test]
fn kv_server_with_a_log_says_log_and_its_fsync_policy() {
    for (flag, policy) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
    ] {
        let dir = TempDir::new("kv-info");
        let server = Server::start(dir.path(), &["--fsync", flag]);
        let mut client = server.client();
        set(&mut client, "k");
        let info = client.call(&INFO, &()).expect("info");
        assert_eq!(
            info,
            KvInfo {
                storage: Storage::Log,
                fsync: Some(policy),
                keys: 1
            },
            "--fsync {flag}"
        );
    }
    let dir = TempDir::new("kv-info-memory");
    let server = Server::start(dir.path(), &["--in-memory"]);
    let info = server.client().call(&INFO, &()).expect("info");
    assert_eq!((info.storage, info.fsync), (Storage::Memory, None));
}

#[test]
fn a_request_with_a_payload_is_invalid_argument_and_the_text_is_as_specified() {
    let server = support::start_default();
    // INFO's request id on the wire, with a payload that should be empty.
    let with_payload: courier_rpc::service::Method<Bytes, Bytes> =
        courier_rpc::service::Method::new(INFO.service, INFO.method, "kv.Info");
    let mut client = Client::connect(server.local_addr()).expect("connect");
    match client.call(&with_payload, &Bytes::from_static(b"x")) {
        Err(ClientError::Status(s)) => assert_eq!(s.code, Code::INVALID_ARGUMENT),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let text = client
        .call(&with_payload, &Bytes::new())
        .expect("info as bytes");
    assert_eq!(&text[..], b"storage memory\nfsync none\nkeys 0\n");
}
