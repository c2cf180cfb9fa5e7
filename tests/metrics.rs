//! The Prometheus endpoint over real sockets: a server with the echo and kv services (kv made
//! durable by a log under `--fsync always`, so that SET answers wait for the group commit) and
//! a blocking method, called by real clients; `/metrics` scraped over HTTP shows requests by
//! method and status and a latency histogram per method whose counts are the calls made, in a
//! format `promtool check metrics` accepts (when promtool is installed: Debian's `prometheus`
//! package; `.ci/run` installs it) and that this file's own parser of the text format reads.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{self, Key, SetRequest};
use courier_rpc::metrics::MetricsServer;
use courier_rpc::service::{Method, Router};
use courier_rpc::{echo, Code, Server};
use support::TempDir;

/// A blocking method that sleeps 30 ms: its latency is at least that.
const NAP: Method<(), ()> = Method::new(40, 1, "test.Nap");

/// Sends one HTTP/1.1 request and returns the status line's code, the headers and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(support::IO_TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header block");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, head.to_string(), body.to_string())
}

/// One sample of the text format: the metric name, its labels, its value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition format 0.0.4: `# HELP` and `# TYPE` lines (each metric's
/// TYPE before its samples, once), and `name{label="value",...} value` lines with `\\`, `\"`
/// and `\n` escapes in label values. Panics, naming the line, on anything else.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "a second TYPE for {name}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name, parse_labels(body, line))
            }
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "metric name in {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no TYPE before {line}");
        samples.push((name.to_string(), labels, value));
    }
    (types, samples)
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        body = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    labels
}

/// The value of the sample `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "one sample {name} {want:?}");
    found[0]
}

/// The histogram of `method`: (le, cumulative count) in order, and its count.
fn histogram(samples: &[Sample], method: &str) -> (Vec<(f64, f64)>, f64) {
    let buckets = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "courier_request_duration_seconds_bucket"
                && l.get("method").map(String::as_str) == Some(method)
        })
        .map(|(_, l, v)| {
            let le = match l["le"].as_str() {
                "+Inf" => f64::INFINITY,
                b => b.parse().expect("le is a number"),
            };
            (le, *v)
        })
        .collect();
    let count = value(
        samples,
        "courier_request_duration_seconds_count",
        &[("method", method)],
    );
    (buckets, count)
}

#[test]
fn metrics_count_every_call_by_method_status_and_latency() {
    let dir = TempDir::new("metrics");
    let (store, log) = support::open_kv_log(dir.path(), kv::log::FsyncPolicy::Always);
    let mut router = Router::new();
    echo::register(&mut router);
    kv::register_logged(&mut router, store, log);
    router.register_blocking(NAP, |_, ()| {
        thread::sleep(Duration::from_millis(30));
        Ok(())
    });
    let server = Server::builder()
        .addr("127.0.0.1:0".parse().expect("addr"))
        .loops(2)
        .bind(router)
        .expect("bind");
    let metrics =
        MetricsServer::start("127.0.0.1:0".parse().expect("addr"), server.stats()).expect("start");
    let running = server.spawn().expect("spawn");
    let addr = running.local_addr();

    // Two clients, so both loops serve: their counts are summed.
    for c in 0..2u8 {
        let mut client = Client::connect(addr).expect("connect");
        for i in 0..50u8 {
            let set = SetRequest {
                key: Bytes::from(vec![b'k', c, i]),
                value: Bytes::from_static(b"v"),
            };
            client.call(&kv::SET, &set).expect("SET");
        }
        for i in 0..40u8 {
            // Keys 0..20 were set; 50..70 were not.
            let key = Key(Bytes::from(vec![b'k', c, if i < 20 { i } else { 30 + i }]));
            match client.call(&kv::GET, &key) {
                Ok(_) => {}
                Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => {}
                other => panic!("GET: {other:?}"),
            }
        }
        for _ in 0..3 {
            client.call(&NAP, &()).expect("nap");
        }
        let unknown: Method<(), ()> = Method::new(77, 9, "nowhere.Nothing");
        let err = client.call(&unknown, &()).expect_err("unknown method");
        assert!(matches!(err, ClientError::Status(s) if s.code == Code::UNIMPLEMENTED));
    }

    let (code, head, text) = http(metrics.local_addr(), "GET", "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (types, samples) = parse(&text);
    assert_eq!(types["courier_request_duration_seconds"], "histogram");
    assert_eq!(types["courier_requests_total"], "counter");
    assert_eq!(types["courier_connections_open"], "gauge");

    let requests = |method: &str, code: &str| {
        value(
            &samples,
            "courier_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(requests("kv.Set", "OK"), 100.0);
    assert_eq!(requests("kv.Get", "OK"), 40.0);
    assert_eq!(requests("kv.Get", "NOT_FOUND"), 40.0);
    assert_eq!(requests("test.Nap", "OK"), 6.0);
    assert_eq!(requests("unknown", "UNIMPLEMENTED"), 2.0);
    assert_eq!(requests("echo.Echo", "OK"), 0.0);

    for (method, calls) in [("kv.Set", 100.0), ("kv.Get", 80.0), ("test.Nap", 6.0)] {
        let (buckets, count) = histogram(&samples, method);
        assert_eq!(count, calls, "{method}");
        assert_eq!(buckets.len(), 20, "{method}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{method}: bounds and counts ascend: {buckets:?}"
        );
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, calls)), "{method}");
    }
    // Each nap slept 30 ms before it answered: none is in a bucket of 25 ms or less.
    let (nap, _) = histogram(&samples, "test.Nap");
    let at = |le: f64| nap.iter().find(|(b, _)| *b == le).expect("bucket").1;
    assert_eq!(at(0.025), 0.0);
    assert!(
        value(
            &samples,
            "courier_request_duration_seconds_sum",
            &[("method", "test.Nap")]
        ) >= 0.18
    );
    // The STATS counters are there too, under their Prometheus names.
    assert!(value(&samples, "courier_frames_in_total", &[]) >= 188.0);
    assert_eq!(
        value(
            &samples,
            "courier_connections_closed_total",
            &[("cause", "flood")]
        ),
        0.0
    );

    // The same text passes Prometheus's own checker.
    match Command::new("promtool").arg("--version").output() {
        Ok(_) => {
            let mut check = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run promtool");
            check
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed promtool");
            let out = check.wait_with_output().expect("promtool ends");
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("promtool is not installed; .ci/run installs Debian's prometheus package")
        }
        Err(_) => eprintln!("promtool not installed: checked with this test's parser only"),
    }

    // Other paths and methods.
    assert_eq!(http(metrics.local_addr(), "GET", "/").0, 404);
    let (code, head, _) = http(metrics.local_addr(), "POST", "/metrics");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    metrics.shutdown();
    running.shutdown().expect("shutdown");
}
