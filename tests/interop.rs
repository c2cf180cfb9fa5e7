//! Interoperability: proto-spec/client.py, a client written in Python from the spec alone,
//! against the Rust server; and values crossing between the Python and the Rust client.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};

use bytes::Bytes;
use courier::client::Client;
use courier::kv::{Key, SetRequest, GET, SET};

fn python_client(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/client.py"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("python3 runs (it is part of the test environment)")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "client.py failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn python_client_pings_echoes_and_pipelines() {
    let server = support::start_default();
    let addr = server.local_addr();
    assert_eq!(stdout_of(&python_client(addr, &["ping"])), "PONG\n");
    assert_eq!(
        stdout_of(&python_client(addr, &["echo", "héllo"])),
        "héllo\n"
    );
    assert_eq!(
        stdout_of(&python_client(addr, &["pipeline", "500"])),
        "500 echoes matched\n"
    );
}

#[test]
fn keys_cross_between_the_python_and_the_rust_client() {
    let server = support::start_default();
    let addr = server.local_addr();
    let mut rust = Client::connect(addr).expect("connect");

    assert_eq!(
        stdout_of(&python_client(addr, &["set", "from-python", "snake"])),
        "OK\n"
    );
    let got = rust
        .call(&GET, &Key(Bytes::from_static(b"from-python")))
        .expect("Rust reads what Python wrote");
    assert_eq!(&got.0[..], b"snake");

    rust.call(
        &SET,
        &SetRequest {
            key: Bytes::from_static(b"from-rust"),
            value: Bytes::from_static(b"crab"),
        },
    )
    .expect("Rust writes");
    assert_eq!(
        stdout_of(&python_client(addr, &["get", "from-rust"])),
        "crab\n"
    );
    assert_eq!(
        stdout_of(&python_client(addr, &["del", "from-rust"])),
        "deleted\n"
    );

    let missing = python_client(addr, &["get", "from-rust"]);
    assert_eq!(missing.status.code(), Some(1), "a missing key is NOT_FOUND");
}
