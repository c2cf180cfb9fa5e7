//! courier-bench end to end: the built binary against an in-process server, its JSON report
//! checked against the server's own counters.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

/// Runs courier-bench against `addr` with `args` and `--json`; returns the parsed report.
fn bench(addr: SocketAddr, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .arg("--json")
        .output()
        .expect("run courier-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "courier-bench failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON {stdout:?}: {e}"))
}

#[test]
fn mixed_workload_with_prefill_is_counted_by_the_server() {
    let server = support::start_default();
    let addr = server.local_addr();
    let report = bench(
        addr,
        &[
            "--requests",
            "2000",
            "--clients",
            "4",
            "--threads",
            "2",
            "--pipeline",
            "8",
            "--workload",
            "mixed",
            "--prefill",
            "--keyspace",
            "100",
        ],
    );
    assert_eq!(report["workload"], "mixed");
    assert_eq!(report["clients"], 4);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["pipeline"], 8);
    assert_eq!(report["requests"], 2000);
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
    // Every key was prefilled, so no GET misses.
    assert_eq!(report["misses"], 0, "{report}");

    let stats = support::stats(addr);
    let answered = stats.value("requests_OK") + stats.value("requests_NOT_FOUND");
    assert!(answered >= 2000 + 100, "server answered only {answered}");
}

#[test]
fn timed_echo_run_completes_requests() {
    let server = support::start_default();
    let report = bench(
        server.local_addr(),
        &[
            "--workload",
            "echo",
            "--duration",
            "1",
            "--clients",
            "4",
            "--threads",
            "2",
        ],
    );
    assert_eq!(report["workload"], "echo");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert!(report["seconds"].as_f64().unwrap() >= 1.0, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
}

#[test]
fn no_server_exits_2_with_one_line() {
    // A port nobody listens on: bind one, note it, and close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(["--addr", &addr.to_string(), "--requests", "10"])
        .output()
        .expect("run courier-bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn reconnect_opens_a_connection_every_n_requests() {
    let server = support::start_default();
    let report = bench(
        server.local_addr(),
        &[
            "--workload",
            "echo",
            "--requests",
            "30",
            "--clients",
            "2",
            "--threads",
            "1",
            "--reconnect",
            "3",
        ],
    );
    assert_eq!(report["requests"], 30, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
    // 10 connections of 3 requests each; the first 2 were opened before the clock started.
    assert_eq!(report["connections"], 8, "{report}");
    assert_eq!(report["connect_failures"], 0, "{report}");
    assert!(
        report["connections_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(support::counter(&server, "connections_accepted"), 10);
}

#[test]
fn reconnect_over_tls_runs_a_handshake_per_connection() {
    let pki = support::tls::generate(&[]);
    let server = support::start(
        courier_rpc::server::Server::builder().tls(pki.server_config(false)),
        support::bundled_router(),
    );
    let ca = pki.ca.path.to_str().expect("a UTF-8 path");
    let report = bench(
        server.local_addr(),
        &[
            "--workload",
            "echo",
            "--requests",
            "12",
            "--clients",
            "2",
            "--threads",
            "1",
            "--reconnect",
            "1",
            "--tls",
            "--tls-ca",
            ca,
        ],
    );
    assert_eq!(report["requests"], 12, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
    assert_eq!(report["connections"], 10, "{report}");
    assert_eq!(support::counter(&server, "tls_handshakes"), 12);
}

#[test]
fn default_report_has_no_connection_figures_and_reconnect_0_is_refused() {
    let server = support::start_default();
    let report = bench(
        server.local_addr(),
        &["--workload", "echo", "--requests", "10"],
    );
    assert!(report.get("connections").is_none(), "{report}");
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args([
            "--addr",
            &server.local_addr().to_string(),
            "--reconnect",
            "0",
        ])
        .output()
        .expect("run courier-bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--reconnect must be at least 1"),
        "{stderr}"
    );
}

/// Runs courier-bench with `args` against `addr`: its exit code, stdout and stderr.
fn bench_status(addr: SocketAddr, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("run courier-bench");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn failed_requests_exit_1_unless_the_error_rate_allows_them() {
    // An echo-only server: every kv GET is answered UNIMPLEMENTED.
    let mut router = courier_rpc::Router::new();
    courier_rpc::echo::register(&mut router);
    let server = support::start(courier_rpc::Server::builder(), router);
    let addr = server.local_addr();
    let args = [
        "--workload",
        "get",
        "--requests",
        "200",
        "--clients",
        "2",
        "--json",
    ];

    let (code, stdout, stderr) = bench_status(addr, &args);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    // The report is still printed, and says what failed.
    let report: Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["errors"]["UNIMPLEMENTED"], 200, "{report}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("200 of 200 requests failed (100.00%), above --max-error-rate 0"),
        "{stderr}"
    );

    let tolerant = [&args[..], &["--max-error-rate", "1"]].concat();
    let (code, _, stderr) = bench_status(addr, &tolerant);
    assert_eq!(code, Some(0), "{stderr}");

    // The same bench against the kv service fails nothing and exits 0.
    let kv = support::start_default();
    let (code, _, stderr) = bench_status(kv.local_addr(), &args);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, _, stderr) = bench_status(addr, &["--max-error-rate", "2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a fraction from 0 to 1"), "{stderr}");
}

#[test]
fn each_run_draws_new_keys_unless_given_the_seed_of_another() {
    let server = support::start_default();
    let addr = server.local_addr();
    let common = [
        "--requests",
        "200",
        "--clients",
        "1",
        "--threads",
        "1",
        "--keyspace",
        "1000000000",
    ];
    let set = bench(addr, &[&common[..], &["--workload", "set"]].concat());
    let seed = set["seed"].as_u64().expect("the report gives its seed");

    // A new seed: GET draws other keys than the SETs wrote, so (nearly) all miss.
    let fresh = bench(addr, &[&common[..], &["--workload", "get"]].concat());
    assert_ne!(fresh["seed"].as_u64(), Some(seed), "{fresh}");
    assert!(fresh["misses"].as_u64().expect("misses") > 190, "{fresh}");

    // The SET run's seed: the same keys, every one found.
    let seed_text = seed.to_string();
    let again = bench(
        addr,
        &[&common[..], &["--workload", "get", "--seed", &seed_text]].concat(),
    );
    assert_eq!(again["seed"].as_u64(), Some(seed), "{again}");
    assert_eq!(again["misses"], 0, "{again}");
}
