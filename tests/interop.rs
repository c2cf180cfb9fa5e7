//! Interoperability: proto-spec/client.py, a client written in Python from the spec alone,
//! against the Rust server, over plain TCP and over TLS with a token; and values crossing
//! between the Python and the Rust client.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::kv::{Key, SetRequest, GET, SET};
use support::kv_process;

/// client.py against `addr` with `args`; no token in its environment.
fn python_command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/client.py"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .env_remove("COURIER_TOKEN");
    command
}

fn run(mut command: Command) -> Output {
    command
        .output()
        .expect("python3 runs (it is part of the test environment)")
}

fn python_client(addr: SocketAddr, args: &[&str]) -> Output {
    run(python_command(addr, args))
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

/// The stderr of a client.py run that must have failed with exit status 2.
fn stderr_of_failure(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "client.py should fail: stdout {:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn utf8_path(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
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
fn python_client_lists_the_methods_through_reflection() {
    let server = support::start_default();
    let listed = stdout_of(&python_client(server.local_addr(), &["methods"]));
    for line in [
        "0/4 admin.Methods(empty) -> utf8",
        "1/1 echo.Echo(bytes) -> bytes",
        "2/1 kv.Get(bytes) -> bytes",
        "2/2 kv.Set(custom) -> empty",
        "2/3 kv.Delete(bytes) -> bool",
    ] {
        assert!(listed.lines().any(|l| l == line), "{line} in {listed}");
    }
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
        // The import would otherwise leave proto-spec/__pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
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
    use courier_rpc::proto::{Code, Frame, Response};
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

/// client.py over TLS with a token (PROTOCOL.md Sections 17 and 18, SERVICES.md 0.2 to 0.4)
/// against a kv-server process started with --tls-cert, --tls-key and --acl: WHOAMI and kv
/// SET, GET and DELETE as the token's identity; the server's certificate checked by IP
/// address and by DNS name; a method the access list does not allow; no token; a wrong
/// token; and a plaintext client on the TLS port.
#[test]
fn python_client_over_tls_with_a_token_against_kv_server() {
    let pki = support::tls::generate(&[]);
    let dir = support::TempDir::new("interop-tls");
    let token = "s3cret-token";
    // With a line ending, as an editor writes it: client.py drops the final one.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    // The access list holds the token's SHA-256, never the token (SERVICES.md 0.4).
    let hash: String = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let acl = dir.path().join("acl.toml");
    let acl_text = format!(
        r#"[[identity]]
name = "alice"
token_sha256 = "{hash}"
allow = ["kv.*"]
"#
    );
    std::fs::write(&acl, acl_text).expect("write the access list");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data directory");
    let server = kv_process::Server::start(
        &data,
        &[
            "--tls-cert",
            utf8_path(&pki.server.cert.path),
            "--tls-key",
            utf8_path(&pki.server.key.path),
            "--acl",
            utf8_path(&acl),
        ],
    );
    let addr = server.addr;
    let ca = utf8_path(&pki.ca.path);
    let with_token_file = |args: &[&str]| {
        let tls = ["--tls", "--ca", ca, "--token-file", utf8_path(&token_file)];
        python_client(addr, &[&tls[..], args].concat())
    };

    // The identity the token proves, then the kv methods as that identity.
    assert_eq!(stdout_of(&with_token_file(&["whoami"])), "token alice\n");
    assert_eq!(
        stdout_of(&with_token_file(&["set", "tls-key", "sealed"])),
        "OK\n"
    );
    assert_eq!(stdout_of(&with_token_file(&["get", "tls-key"])), "sealed\n");
    assert_eq!(
        stdout_of(&with_token_file(&["del", "tls-key"])),
        "deleted\n"
    );
    let missing = with_token_file(&["get", "tls-key"]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "a deleted key is NOT_FOUND: {missing:?}"
    );

    // The token from COURIER_TOKEN, the certificate checked against the DNS name localhost
    // (the runs above checked it against the IP address 127.0.0.1).
    let mut by_name = python_command(
        addr,
        &[
            "--tls",
            "--ca",
            ca,
            "--server-name",
            "localhost",
            "set",
            "by-name",
            "ok",
        ],
    );
    by_name.env("COURIER_TOKEN", token);
    assert_eq!(stdout_of(&run(by_name)), "OK\n");

    // alice may call kv.* only: ECHO is PERMISSION_DENIED, and not processed.
    let denied = stderr_of_failure(&with_token_file(&["echo", "not for alice"]));
    assert!(
        denied.contains("status 7"),
        "echo.Echo is not in alice's list: {denied}"
    );

    // Without a token the connection is anonymous: WHOAMI answers, GET is UNAUTHENTICATED.
    let anonymous = ["--tls", "--ca", ca];
    assert_eq!(
        stdout_of(&python_client(
            addr,
            &[&anonymous[..], &["whoami"]].concat()
        )),
        "anonymous\n"
    );
    let refused = stderr_of_failure(&python_client(
        addr,
        &[&anonymous[..], &["get", "by-name"]].concat(),
    ));
    assert!(
        refused.contains("status 16"),
        "a GET before AUTH: {refused}"
    );

    // A wrong token: AUTH is answered UNAUTHENTICATED, and client.py says so.
    let mut wrong = python_command(addr, &["--tls", "--ca", ca, "get", "by-name"]);
    wrong.env("COURIER_TOKEN", "not-the-token");
    let wrong = stderr_of_failure(&run(wrong));
    assert!(
        wrong.contains("authentication failed") && wrong.contains("status 16"),
        "a wrong token: {wrong}"
    );

    // Courier without TLS on the TLS port: one plaintext ERROR that says why.
    let plaintext = stderr_of_failure(&python_client(addr, &["ping"]));
    assert!(
        plaintext.contains("this port requires TLS"),
        "a plaintext client on a TLS port: {plaintext}"
    );

    // The server never writes the token, not even at debug level.
    let leaked: Vec<String> = server
        .stderr_lines()
        .into_iter()
        .filter(|line| line.contains(token))
        .collect();
    assert!(leaked.is_empty(), "the server logged the token: {leaked:?}");
}

/// `client.py --shards A,B,C owner KEY` for every owner vector of
/// `proto-spec/vectors/shards.json` (SERVICES.md Section 2.7), the key passed as its raw
/// bytes: the Python client places keys as the vectors, and so the Rust library, say.
#[test]
fn python_client_places_keys_as_the_shard_vectors_say() {
    use std::os::unix::ffi::OsStrExt;

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto-spec/vectors/shards.json"
    ))
    .expect("read shards.json");
    let vectors: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut checked = 0;
    for list in vectors["owner"].as_array().expect("owner lists") {
        let names: Vec<&str> = list["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().expect("a name"))
            .collect();
        for case in list["keys"].as_array().expect("keys") {
            let hex = case["key_hex"].as_str().expect("key_hex");
            let key: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            if key.contains(&0) {
                continue; // a command-line argument cannot hold a NUL byte
            }
            let mut command = Command::new("python3");
            command
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/client.py"))
                .arg("--shards")
                .arg(names.join(","))
                .arg("owner")
                .arg(std::ffi::OsStr::from_bytes(&key));
            let owner = case["owner"].as_str().expect("owner");
            assert_eq!(stdout_of(&run(command)), format!("{owner}\n"), "{case}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} vectors checked");
}

/// `client.py --shards` over three servers: each SET lands on the server that
/// `Rendezvous` names for its key, and on no other; GET and DEL find it there.
#[test]
fn python_client_with_shards_writes_each_key_to_its_owner() {
    use courier_rpc::client::balance::Rendezvous;
    use courier_rpc::proto::Code;

    let servers: Vec<_> = (0..3).map(|_| support::start_default()).collect();
    let names: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let shards = Rendezvous::new(names.iter().cloned());
    let list = names.join(",");
    let mut rust: Vec<Client> = servers
        .iter()
        .map(|s| Client::connect(s.local_addr()).expect("connect"))
        .collect();
    let mut owners = [0; 3];
    for i in 0..24 {
        let key = format!("user:{i}");
        let value = format!("value {i}");
        let set = python_command_without_addr(&["--shards", &list, "set", &key, &value]);
        assert_eq!(stdout_of(&run(set)), "OK\n");
        let owner = shards.owner(key.as_bytes());
        owners[owner] += 1;
        for (s, client) in rust.iter_mut().enumerate() {
            let got = client.call(&GET, &Key(Bytes::from(key.clone())));
            if s == owner {
                assert_eq!(&got.expect("on its owner").0[..], value.as_bytes());
            } else {
                match got {
                    Err(courier_rpc::client::ClientError::Status(status)) => {
                        assert_eq!(status.code, Code::NOT_FOUND, "{key} on {}", names[s])
                    }
                    other => panic!("{key} found on {}, not its owner: {other:?}", names[s]),
                }
            }
        }
        let get = python_command_without_addr(&["--shards", &list, "get", &key]);
        assert_eq!(stdout_of(&run(get)), format!("{value}\n"));
    }
    assert!(
        owners.iter().all(|&n| n > 0),
        "every server owns a key: {owners:?}"
    );
    let del = python_command_without_addr(&["--shards", &list, "del", "user:0"]);
    assert_eq!(stdout_of(&run(del)), "deleted\n");
    let missing = python_command_without_addr(&["--shards", &list, "get", "user:0"]);
    assert_eq!(run(missing).status.code(), Some(1));
    // --shards with --addr, or for a command without a key, is refused.
    let both = python_command(servers[0].local_addr(), &["--shards", &list, "get", "k"]);
    assert!(stderr_of_failure(&run(both)).contains("--shards replaces --addr"));
    let ping = python_command_without_addr(&["--shards", &list, "ping"]);
    assert!(stderr_of_failure(&run(ping)).contains("--shards is for"));
}

/// client.py with `args` and no `--addr`; no token in its environment.
fn python_command_without_addr(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/client.py"))
        .args(args)
        .env_remove("COURIER_TOKEN");
    command
}
