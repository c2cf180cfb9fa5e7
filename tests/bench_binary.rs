//! courier-bench end to end: the built binary against an in-process server (or a kv-server
//! process, or a proxy in front of one), its JSON report checked against the server's own
//! counters and the proxy's.

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

// ---- head-of-line: one silent connection does not hold up the others on its thread ----

/// How long the proxy holds the stalled connection's requests at most: far longer than the
/// other connections need, so reaching it means they were held up too.
const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// What the proxy saw.
#[derive(Default)]
struct ProxyCounts {
    /// Response bytes forwarded to the connections that were not stalled.
    others_down: std::sync::atomic::AtomicU64,
    /// Response bytes forwarded to the stalled connection.
    stalled_down: std::sync::atomic::AtomicU64,
    /// The stalled connection's requests are forwarded from now on.
    released: std::sync::atomic::AtomicBool,
    /// ... because the others had got `release_after` bytes of responses (not HOLD_LIMIT).
    released_by_count: std::sync::atomic::AtomicBool,
    /// Response bytes the stalled connection had got when it was released.
    stalled_down_at_release: std::sync::atomic::AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` for `connections` connections. It holds
/// back every byte the first connection it accepts sends (so the server sees none of its
/// requests) until the other connections have been forwarded `release_after` bytes of
/// responses, or HOLD_LIMIT passes; then it forwards them. Threads, one per direction per
/// connection, end when their source closes or stays silent for `support::IO_TIMEOUT`.
fn stalling_proxy(
    upstream: SocketAddr,
    connections: usize,
    release_after: u64,
) -> (SocketAddr, std::sync::Arc<ProxyCounts>) {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let counts = Arc::new(ProxyCounts::default());
    let shared = Arc::clone(&counts);
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        for n in 0..connections {
            let Some(client) = support::accept_within(&listener, support::IO_TIMEOUT) else {
                return;
            };
            let server = support::raw_connect(upstream);
            let stalled = n == 0;
            let (client_in, server_out) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let counts = Arc::clone(&shared);
            // Requests: the stalled connection's wait for the release.
            std::thread::spawn(move || {
                pump(client_in, server_out, |_| {
                    while stalled && !counts.released.load(Ordering::SeqCst) {
                        if start.elapsed() >= HOLD_LIMIT {
                            counts.released.store(true, Ordering::SeqCst);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                })
            });
            let counts = Arc::clone(&shared);
            // Responses: counted; the others' count releases the stalled connection.
            std::thread::spawn(move || {
                pump(server, client, |n| {
                    if stalled {
                        counts.stalled_down.fetch_add(n, Ordering::SeqCst);
                        return;
                    }
                    let total = counts.others_down.fetch_add(n, Ordering::SeqCst) + n;
                    if total >= release_after && !counts.released.load(Ordering::SeqCst) {
                        counts
                            .stalled_down_at_release
                            .store(counts.stalled_down.load(Ordering::SeqCst), Ordering::SeqCst);
                        counts.released_by_count.store(true, Ordering::SeqCst);
                        counts.released.store(true, Ordering::SeqCst);
                    }
                })
            });
        }
    });
    (addr, counts)
}

/// Copies `from` to `to` until `from` ends or is silent for its read timeout, calling
/// `before` with the size of each chunk before it is forwarded; then shuts `to` down.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, mut before: impl FnMut(u64)) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                before(n as u64);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_silent_connection_does_not_hold_up_the_others_on_its_thread() {
    use std::sync::atomic::Ordering;

    let server = support::start_default();
    // Echo of 64 bytes: every response is a 36-byte header and the 64 bytes back.
    const RESPONSE: u64 = 36 + 64;
    const REQUESTS: u64 = 400;
    const PIPELINE: u64 = 4;
    // The stalled connection claims one batch of PIPELINE requests at the start and no more
    // until they are answered; the three others must carry all the rest by themselves.
    let (proxy, counts) = stalling_proxy(server.local_addr(), 4, (REQUESTS - PIPELINE) * RESPONSE);
    let report = bench(
        proxy,
        &[
            "--workload",
            "echo",
            "--value-size",
            "64",
            "--clients",
            "4",
            "--threads",
            "1",
            "--pipeline",
            &PIPELINE.to_string(),
            "--requests",
            &REQUESTS.to_string(),
            "--timeout",
            "60",
        ],
    );
    // On one thread, the three other connections completed every request but the stalled
    // one's while the stalled one had sent nothing to the server and got nothing back.
    assert!(
        counts.released_by_count.load(Ordering::SeqCst),
        "the others were held up with the stalled connection: {} of {} response bytes",
        counts.others_down.load(Ordering::SeqCst),
        (REQUESTS - PIPELINE) * RESPONSE
    );
    assert_eq!(counts.stalled_down_at_release.load(Ordering::SeqCst), 0);
    // Released, the stalled connection got its batch answered, and the run is whole.
    assert_eq!(
        counts.stalled_down.load(Ordering::SeqCst),
        PIPELINE * RESPONSE
    );
    assert_eq!(
        counts.others_down.load(Ordering::SeqCst),
        (REQUESTS - PIPELINE) * RESPONSE
    );
    assert_eq!(report["requests"], REQUESTS, "{report}");
    assert_eq!(report["clients_lost"], 0, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
}

#[test]
fn a_server_that_stops_answering_loses_the_client_and_exits_1() {
    // A listener that accepts and never answers: every request waits for --timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let holder = std::thread::spawn(move || {
        let accepted: Vec<_> = (0..2)
            .filter_map(|_| support::accept_within(&listener, support::IO_TIMEOUT))
            .collect();
        // Held open (reading nothing) until courier-bench has given up on them.
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(accepted);
    });
    let (code, stdout, stderr) = bench_status(
        addr,
        &[
            "--workload",
            "echo",
            "--clients",
            "2",
            "--threads",
            "1",
            "--pipeline",
            "3",
            "--requests",
            "100",
            "--timeout",
            "1",
            "--json",
        ],
    );
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["clients_lost"], 2, "{report}");
    assert_eq!(report["errors"]["timeout"], 6, "{report}");
    assert_eq!(report["requests"], 6, "{report}");
    assert!(stderr.contains("6 of 6 requests failed"), "{stderr}");
    holder.join().expect("the holder thread");
}

// ---- writing into a durable server only when asked ----

/// kv INFO's key count of the server at `addr`.
fn keys(addr: SocketAddr) -> u64 {
    let mut client = courier_rpc::client::Client::connect(addr).expect("connect");
    client
        .call(&courier_rpc::kv::INFO, &())
        .expect("kv.Info")
        .keys
}

#[test]
fn writing_into_a_server_with_a_log_is_refused_unless_allowed() {
    let dir = support::TempDir::new("bench-durable");
    let server = support::kv_process::Server::start(dir.path(), &["--fsync", "never"]);
    let addr = server.addr;
    let small = ["--requests", "50", "--clients", "2", "--keyspace", "20"];

    for writes in [
        &["--workload", "set"][..],
        &["--workload", "mixed"],
        &["--workload", "get", "--prefill"],
    ] {
        let (code, stdout, stderr) = bench_status(addr, &[&small[..], writes].concat());
        assert_eq!(code, Some(2), "{writes:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("storage log, fsync never") && stderr.contains("--allow-durable"),
            "{stderr}"
        );
    }
    assert_eq!(keys(addr), 0, "a refused run wrote nothing");

    // Reads run without asking.
    let (code, _, stderr) = bench_status(addr, &[&small[..], &["--workload", "get"]].concat());
    assert_eq!(code, Some(0), "{stderr}");

    let report = bench(
        addr,
        &[&small[..], &["--workload", "set", "--allow-durable"]].concat(),
    );
    assert_eq!(report["requests"], 50, "{report}");
    assert!(keys(addr) > 0);
}

#[test]
fn an_in_memory_server_takes_writes_and_one_without_kv_info_is_refused() {
    let dir = support::TempDir::new("bench-memory");
    let server = support::kv_process::Server::start(dir.path(), &["--in-memory"]);
    let report = bench(
        server.addr,
        &["--workload", "set", "--requests", "50", "--clients", "2"],
    );
    assert_eq!(report["requests"], 50, "{report}");
    assert!(keys(server.addr) > 0);

    // An echo-only server answers kv.Info UNIMPLEMENTED: it cannot say.
    let mut router = courier_rpc::Router::new();
    courier_rpc::echo::register(&mut router);
    let echo = support::start(courier_rpc::Server::builder(), router);
    let args = ["--workload", "set", "--requests", "10", "--clients", "1"];
    let (code, _, stderr) = bench_status(echo.local_addr(), &args);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("does not answer kv.Info") && stderr.contains("--allow-durable"),
        "{stderr}"
    );
    // Allowed, it runs; every SET is answered UNIMPLEMENTED, so the run fails with exit 1.
    let allowed = [&args[..], &["--allow-durable"]].concat();
    let (code, _, stderr) = bench_status(echo.local_addr(), &allowed);
    assert_eq!(code, Some(1), "{stderr}");
}

/// The value of the sample `series` (its name and labels exactly as written) in Prometheus
/// text.
fn sample(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "one {series} in\n{text}");
    found[0]
}

/// GET /metrics over HTTP/1.1; the body.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut http = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    http.set_read_timeout(Some(support::IO_TIMEOUT))
        .expect("timeout");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    http.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .expect("a body")
}

/// A kv-server process's `/metrics`, scraped after courier-bench runs against it, counts in
/// each method's latency histogram exactly the requests the bench reports.
#[test]
fn the_metrics_endpoint_counts_every_request_of_a_bench_run() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv-server"));
    command
        .args(["--in-memory", "--loops", "2", "--addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let server = support::process::Process::spawn(command);
    let wait = std::time::Duration::from_secs(30);
    let addr: SocketAddr = server.announced(wait);
    let url: String = server.announced(wait);
    let metrics: SocketAddr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {url}"));

    let common = ["--clients", "6", "--threads", "2", "--pipeline", "4"];
    let sets = bench(
        addr,
        &[
            &common[..],
            &[
                "--workload",
                "set",
                "--requests",
                "3000",
                "--keyspace",
                "500",
            ],
        ]
        .concat(),
    );
    let gets = bench(
        addr,
        &[
            &common[..],
            &[
                "--workload",
                "get",
                "--requests",
                "2000",
                "--keyspace",
                "1000",
            ],
        ]
        .concat(),
    );
    assert_eq!(
        (sets["requests"].as_u64(), gets["requests"].as_u64()),
        (Some(3000), Some(2000))
    );

    let text = scrape(metrics);
    let count = |method: &str| {
        sample(
            &text,
            &format!("courier_request_duration_seconds_count{{method=\"{method}\"}}"),
        )
    };
    assert_eq!(count("kv.Set"), 3000.0);
    assert_eq!(count("kv.Get"), 2000.0);
    let bucket_inf = sample(
        &text,
        "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"+Inf\"}",
    );
    assert_eq!(bucket_inf, 2000.0);
    // Half the keys were never set: the server's NOT_FOUND count is the bench's misses.
    let misses = sample(
        &text,
        "courier_requests_total{method=\"kv.Get\",code=\"NOT_FOUND\"}",
    );
    assert_eq!(Some(misses as u64), gets["misses"].as_u64(), "{gets}");
    assert!(misses > 0.0, "{gets}");
    // The write run asked the server whether it keeps a log before writing.
    assert_eq!(
        sample(
            &text,
            "courier_requests_total{method=\"kv.Info\",code=\"OK\"}"
        ),
        1.0
    );
}
