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

#[test]
fn python_client_sends_deadlines_rounded_up_and_never_zero() {
    let rounding = Command::new("python3")
        .args([
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import client; \
             print(client.deadline_ms(0.0003), client.deadline_ms(0), client.deadline_ms(1.5), \
             client.deadline_ms(0.0015), client.deadline_ms(1e9))",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec"))
        .output()
        .expect("python3 runs");
    assert_eq!(stdout_of(&rounding), "1 1 1500 2 4294967295\n");
    let server = support::start_default();
    let addr = server.local_addr();
    assert_eq!(
        stdout_of(&python_client(
            addr,
            &["--deadline", "0.0003", "echo", "soon"]
        )),
        "soon\n"
    );
}

#[test]
fn python_client_reads_a_goaway_as_the_spec_says() {
    use courier::proto::{Code, Frame, Response};
    use std::io::Read;
    // A scripted server: it reads the client's four pipelined requests, drains with a GOAWAY
    // naming request 2, answers 1 and 2, and closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let script = std::thread::spawn(move || {
        let mut stream = support::accept_within(&listener, support::IO_TIMEOUT).expect("accept");
        let mut wire = vec![0u8; 4 * (36 + 9)];
        stream.read_exact(&mut wire).expect("four requests");
        let mut out = support::encode(&Frame::GoAway {
            last_request_id: 2,
            code: Code::OK,
            message: "draining".into(),
        });
        for id in [2, 1] {
            out.extend_from_slice(&support::encode(&Frame::Response(Response {
                request_id: id,
                code: Code::OK,
                metadata: Default::default(),
                payload: bytes::Bytes::from(format!("message {}", id - 1)),
            })));
        }
        support::send_raw(&mut stream, &out);
    });
    let out = python_client(addr, &["pipeline", "4"]);
    script.join().expect("the scripted server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("status 14") && stderr.contains("not processed (GOAWAY)"),
        "request 4 is after the GOAWAY's id 2: not processed: {stderr}"
    );
}
