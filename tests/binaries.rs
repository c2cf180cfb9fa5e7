//! The bundled binaries end to end: kv-server and echo-server processes, driven by kv-cli and
//! the library client.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::Client;

mod support;
use support::process::Process;
use support::TempDir;

/// A server process on 127.0.0.1 with a free port; killed when dropped.
struct ServerProcess {
    _process: Process,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(exe: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_at(exe, "127.0.0.1:0", args)
    }

    /// Starts `exe --addr addr args...` and reads the address it prints.
    fn start_at(exe: &str, addr: &str, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(exe);
        command
            .args(["--addr", addr])
            .args(args)
            .env("RUST_LOG", "warn");
        let process = Process::spawn(command);
        let addr = process.announced(Duration::from_secs(30));
        ServerProcess {
            _process: process,
            addr,
        }
    }
}

fn kv_cli(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv-cli"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("run kv-cli")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kv_cli_set_get_del_against_kv_server() {
    let data = TempDir::new("binaries");
    let dir = data.path().to_str().expect("utf-8 path");
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_kv-server"), &["--data-dir", dir]);

    let out = kv_cli(server.addr, &["set", "greeting", "hello world"]);
    assert!(out.status.success(), "set failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "OK\n");

    let out = kv_cli(server.addr, &["get", "greeting"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "get failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hello world\n");

    let out = kv_cli(server.addr, &["del", "greeting"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "deleted\n");

    let out = kv_cli(server.addr, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(1), "a missing key exits 1");
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "kv-cli: key not found: greeting\n");

    let out = kv_cli(server.addr, &["del", "greeting"]);
    assert_eq!(out.status.code(), Some(1));

    let out = kv_cli(server.addr, &["ping"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("PONG"));

    // Every kv-cli run above was one connection with one request; `stats` prints the
    // server's counters, including those requests and the misses.
    let out = kv_cli(server.addr, &["stats"]);
    assert!(out.status.success());
    let stats = text(&out.stdout);
    let value = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{stats}"))
    };
    assert_eq!(value("requests_NOT_FOUND"), 1, "the get of a missing key");
    assert_eq!(
        value("requests_OK"),
        4,
        "set, get, del, del (DELETE of a missing key is OK)"
    );
    assert!(value("connections_accepted") >= 6);
    assert_eq!(value("connections_open"), 1, "only the stats connection");
    assert_eq!(value("handler_panics"), 0);
}

#[test]
fn kv_cli_errors_are_one_line_and_exit_2() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = kv_cli(addr, &["get", "k"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.starts_with("kv-cli: cannot connect to"),
        "{stderr:?}"
    );

    let server = ServerProcess::start(env!("CARGO_BIN_EXE_kv-server"), &["--in-memory"]);
    let out = kv_cli(server.addr, &["set", "", "value"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr:?}");
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for exe in [
        env!("CARGO_BIN_EXE_kv-server"),
        env!("CARGO_BIN_EXE_echo-server"),
    ] {
        let out = Command::new(exe)
            .args(["--addr", &addr])
            .args(if exe.ends_with("kv-server") {
                &["--in-memory"][..]
            } else {
                &[]
            })
            .output()
            .expect("run the server");
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("already in use"), "{exe}: {stderr:?}");
        assert!(
            stderr.contains(&addr),
            "{exe} names the address: {stderr:?}"
        );
    }
}

#[test]
fn echo_server_echoes() {
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_echo-server"), &[]);
    let mut client = Client::connect(server.addr).expect("connect");
    let body = Bytes::from_static(b"ping through a real process");
    assert_eq!(
        client.call(&courier_rpc::echo::ECHO, &body).expect("echo"),
        body
    );
}

#[test]
fn every_binary_says_its_own_name_and_version() {
    let version = env!("CARGO_PKG_VERSION");
    for (name, exe) in [
        ("kv-server", env!("CARGO_BIN_EXE_kv-server")),
        ("echo-server", env!("CARGO_BIN_EXE_echo-server")),
        ("kv-cli", env!("CARGO_BIN_EXE_kv-cli")),
        ("courier-bench", env!("CARGO_BIN_EXE_courier-bench")),
    ] {
        let output = Command::new(exe).arg("--version").output().expect("run");
        assert!(output.status.success(), "{name}: {output:?}");
        assert_eq!(text(&output.stdout), format!("{name} {version}\n"));
    }
}

#[test]
fn zero_loops_is_refused_not_taken_as_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--addr", "127.0.0.1:0", "--loops", "0"])
        .output()
        .expect("run echo-server");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--loops") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

#[test]
fn a_server_listens_on_a_host_name_as_the_clients_accept() {
    let server = ServerProcess::start_at(env!("CARGO_BIN_EXE_echo-server"), "localhost:0", &[]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let mut client = Client::connect(server.addr).expect("connect");
    let body = Bytes::from_static(b"by name");
    assert_eq!(
        client.call(&courier_rpc::echo::ECHO, &body).expect("echo"),
        body
    );
}

#[test]
fn metrics_beyond_loopback_are_refused_without_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_kv-server"))
        .args(["--in-memory", "--addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "0.0.0.0:0"])
        .output()
        .expect("run kv-server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--metrics-open-access"), "{stderr:?}");
    assert!(
        !text(&out.stdout).contains("listening"),
        "refused before it listens"
    );
}
