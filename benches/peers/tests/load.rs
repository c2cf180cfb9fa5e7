//! The load client against real servers on 127.0.0.1: every kind makes exactly the calls it
//! is asked for and checks each reply; a wrong reply is a failure that stops the load; the
//! peer-client binary reports its calls as JSON and fails when it cannot start.

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use courier_peers::client::{self, Caller};
use courier_peers::server;

fn payload() -> Bytes {
    Bytes::from((0..64u8).collect::<Vec<u8>>())
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

fn courier_echo_server() -> courier_rpc::RunningServer {
    let mut router = courier_rpc::Router::new();
    courier_rpc::echo::register(&mut router);
    courier_rpc::Server::builder()
        .addr("127.0.0.1:0".parse().expect("address"))
        .bind(router)
        .expect("bind")
        .spawn()
        .expect("spawn")
}

#[tokio::test]
async fn tonic_makes_every_call_and_checks_every_reply() {
    let (listener, addr) = listener().await;
    tokio::spawn(server::tonic(listener));
    let caller = client::Tonic::connect(addr).await.expect("connect");
    let outcome = client::drive(caller, 301, 16, payload()).await;
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (301, 0));
}

#[tokio::test]
async fn tarpc_makes_every_call_and_checks_every_reply() {
    let (listener, addr) = listener().await;
    tokio::spawn(server::tarpc(listener));
    let caller = client::Tarpc::connect(addr).await.expect("connect");
    let outcome = client::drive(caller, 301, 16, payload()).await;
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (301, 0));
}

#[test]
fn courier_blocking_pipelines_every_call_including_a_short_last_batch() {
    let server = courier_echo_server();
    let mut client = courier_rpc::Client::connect(server.local_addr()).expect("connect");
    let outcome = client::courier_blocking(&mut client, 301, 16, &payload());
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (301, 0));
    server.shutdown().expect("shutdown");
}

#[tokio::test]
async fn courier_async_makes_every_call_and_checks_every_reply() {
    let server = courier_echo_server();
    let caller = client::CourierAsync::connect(server.local_addr())
        .await
        .expect("connect");
    let outcome = client::drive(caller, 301, 16, payload()).await;
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (301, 0));
    server.shutdown().expect("shutdown");
}

#[test]
fn courier_call_makes_every_call_one_at_a_time() {
    let server = courier_echo_server();
    let mut client = courier_rpc::Client::connect(server.local_addr()).expect("connect");
    let outcome = client::one_at_a_time(301, &payload(), |p| client::courier_call(&mut client, p));
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (301, 0));
    server.shutdown().expect("shutdown");
}

#[test]
fn one_at_a_time_stops_at_the_first_wrong_reply() {
    let mut n = 0u32;
    let outcome = client::one_at_a_time(1000, &payload(), |p| {
        n += 1;
        if n == 5 {
            Ok(p.slice(1..))
        } else {
            Ok(p.clone())
        }
    });
    assert_eq!((outcome.ok, outcome.errors), (4, 1));
    assert!(outcome
        .first_error
        .expect("a first error")
        .contains("differs"));
}

#[test]
fn courier_balancer_spreads_every_call_over_its_servers() {
    let servers: Vec<_> = (0..3).map(|_| courier_echo_server()).collect();
    let names: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let balancer = courier_rpc::client::balance::Balancer::builder()
        .build(names)
        .expect("build");
    let outcome = client::one_at_a_time(600, &payload(), |p| {
        client::courier_balancer_call(&balancer, p)
    });
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (600, 0));
    let stats = balancer.stats();
    assert_eq!((stats.attempts, stats.retries), (600, 0));
    // Uniform over three (one call at a time, so every server has 0 outstanding): each
    // gets 200 on average; 100 is more than 8 standard deviations (11.5) below.
    for server in &stats.servers {
        assert!(server.attempts > 100, "{stats:?}");
    }
    for server in servers {
        server.shutdown().expect("shutdown");
    }
}

#[tokio::test]
async fn courier_async_balancer_spreads_every_call_over_its_servers() {
    let servers: Vec<_> = (0..3).map(|_| courier_echo_server()).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let caller = client::CourierAsyncBalancer::build(&addrs, 2)
        .await
        .expect("build");
    let outcome = client::drive(caller.clone(), 600, 16, payload()).await;
    assert_eq!(outcome.first_error, None);
    assert_eq!((outcome.ok, outcome.errors), (600, 0));
    let stats = caller.stats();
    assert_eq!((stats.attempts, stats.retries), (600, 0));
    for server in &stats.servers {
        assert!(server.attempts > 50, "{stats:?}");
    }
    for server in servers {
        server.shutdown().expect("shutdown");
    }
}

/// Answers with the payload reversed on every third call.
#[derive(Clone)]
struct Corrupting(u32);

impl Caller for Corrupting {
    async fn call(&mut self, payload: Bytes) -> Result<Bytes, String> {
        self.0 += 1;
        tokio::task::yield_now().await;
        if self.0.is_multiple_of(3) {
            Ok(payload.iter().rev().copied().collect())
        } else {
            Ok(payload)
        }
    }
}

#[tokio::test]
async fn a_wrong_reply_is_a_failure_and_stops_the_load() {
    let outcome = client::drive(Corrupting(0), 10_000, 4, payload()).await;
    assert!(outcome.errors >= 1, "{outcome:?}");
    let first = outcome.first_error.clone().expect("a first error");
    assert!(first.contains("differs"), "{first}");
    // Each of the 4 tasks stops at its first wrong reply (its third call) at the latest.
    assert!(outcome.ok + outcome.errors <= 12, "{outcome:?}");
}

fn peer_client(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peer-client"))
        .args(args)
        .output()
        .expect("run peer-client")
}

#[test]
fn peer_client_reports_its_calls_as_one_json_line() {
    let server = courier_echo_server();
    let addr = server.local_addr().to_string();
    let out = peer_client(&[
        "--client",
        "courier-blocking",
        "--addr",
        &addr,
        "--calls",
        "1000",
        "--concurrency",
        "8",
        "--warmup",
        "10",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["client"], "courier-blocking");
    assert_eq!(report["calls"], 1000);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["concurrency"], 8);
    assert_eq!(report["payload_size"], 64);
    assert!(report["seconds"].as_f64().expect("seconds") > 0.0);
    assert!(report["client_cpu_seconds"].as_f64().expect("cpu") >= 0.0);
    server.shutdown().expect("shutdown");
}

#[test]
fn peer_client_exits_2_when_it_cannot_start() {
    // A tonic client against courier's echo-server: the HTTP/2 handshake gets no answer it
    // understands, so the connection or the warm-up fails.
    let server = courier_echo_server();
    let addr = server.local_addr().to_string();
    let out = peer_client(&["--client", "tonic", "--addr", &addr, "--calls", "10"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    server.shutdown().expect("shutdown");
}

#[test]
fn peer_client_balances_over_a_comma_separated_list() {
    let servers: Vec<_> = (0..3).map(|_| courier_echo_server()).collect();
    let list = servers
        .iter()
        .map(|s| s.local_addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    for kind in ["courier-balancer", "courier-async-balancer"] {
        let out = peer_client(&[
            "--client", kind, "--addr", &list, "--calls", "900", "--warmup", "30",
        ]);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(report["client"], kind);
        assert_eq!(report["calls"], 900);
        assert_eq!(report["errors"], 0);
        assert_eq!(report["servers"], 3);
        assert_eq!(report["retries"], 0);
        let attempts: Vec<u64> = report["attempts_per_server"]
            .as_array()
            .expect("attempts_per_server")
            .iter()
            .map(|n| n.as_u64().expect("a count"))
            .collect();
        assert_eq!(attempts.len(), 3, "{report}");
        assert_eq!(attempts.iter().sum::<u64>(), 900, "{report}");
        assert!(attempts.iter().all(|&n| n > 0), "{report}");
    }
    for server in servers {
        server.shutdown().expect("shutdown");
    }
}

#[test]
fn peer_client_courier_call_is_one_at_a_time_and_takes_one_server() {
    let servers: Vec<_> = (0..2).map(|_| courier_echo_server()).collect();
    let one = servers[0].local_addr().to_string();
    let out = peer_client(&["--client", "courier-call", "--addr", &one, "--calls", "500"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).expect("utf-8").trim())
            .expect("one JSON line");
    assert_eq!(report["calls"], 500);
    assert_eq!(report["concurrency"], 1);
    assert_eq!(report["servers"], 1);
    assert!(report.get("attempts_per_server").is_none(), "{report}");

    let two = format!("{one},{}", servers[1].local_addr());
    let out = peer_client(&["--client", "courier-call", "--addr", &two, "--calls", "10"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("takes one --addr, not 2"), "{stderr}");
    for server in servers {
        server.shutdown().expect("shutdown");
    }
}
