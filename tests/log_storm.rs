//! A connection storm against a server at its connection limit writes about one log line a
//! second, not one per refused connection, and the lines it writes account for every refusal.
//!
//! In its own test binary because it installs the process's one logger (`log` allows one per
//! process), which records every line the server writes.

mod support;

use std::net::TcpStream;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::server::Server;
use log::{Level, LevelFilter, Log, Metadata, Record};

use support::{
    bundled_router, hostile_stats, hostile_stats_client, hostile_wait_for_stats, raise_fd_limit,
    start,
};

/// The server's connection limit: four clients and the STATS client fill it.
const LIMIT: usize = 5;

/// Connections opened and dropped against the full server.
const STORM: u64 = 3_000;

/// How long the storm may take before the test fails: generous, a few hundred milliseconds
/// on loopback.
const STORM_LIMIT: Duration = Duration::from_secs(10);

/// How long the test polls the counters and the log before it gives up: generous, never hit
/// on success (the suppressed count is written at most a second or two after the storm).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Every line the process logged at info or above: its level and text.
static RECORDS: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

/// Keeps every record of this crate in [`RECORDS`].
struct Recorder;

impl Log for Recorder {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.target().starts_with("courier")
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let mut records = RECORDS.lock().unwrap_or_else(|p| p.into_inner());
            records.push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

fn install_logger() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_boxed_logger(Box::new(Recorder)).expect("the only logger of this process");
        log::set_max_level(LevelFilter::Info);
    });
}

fn records() -> Vec<(Level, String)> {
    RECORDS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The count of suppressed lines a line reports (`"... (N more like this suppressed in the
/// last S s)"` or `"...: N more like this suppressed in the last S s"`), 0 if none.
fn suppressed_in(line: &str) -> u64 {
    let Some(end) = line.find(" more like this suppressed") else {
        return 0;
    };
    let start = line[..end].rfind([' ', '(']).map_or(0, |i| i + 1);
    line[start..end]
        .parse()
        .unwrap_or_else(|e| panic!("count in {line:?}: {e}"))
}

/// The WARN lines about connections refused at the limit: one per refusal written, and the
/// lines that only report how many were suppressed.
fn refusal_lines() -> Vec<String> {
    records()
        .into_iter()
        .filter(|(level, line)| *level == Level::Warn && line.starts_with("rejecting "))
        .map(|(_, line)| line)
        .collect()
}

/// Whether a line is about one refused connection (and not only a report of the count
/// suppressed since the last one).
fn is_refusal(line: &str) -> bool {
    line.contains("connections open, the limit")
}

/// Refusals the lines account for: one per line about a refused connection, plus the
/// suppressed counts every line reports.
fn accounted(lines: &[String]) -> u64 {
    let written = lines.iter().filter(|l| is_refusal(l)).count() as u64;
    written + lines.iter().map(|l| suppressed_in(l)).sum::<u64>()
}

/// 3,000 connections opened and dropped as fast as one thread can against a server holding
/// its limit of 5: every one is refused (`connections_rejected`), yet the server writes at
/// most about one WARN line a second about them, one of which says how many it suppressed,
/// and the refusals written plus the counts the lines report (the last written by a loop's
/// timer sweep, after the storm) add up to the refusals counted.
#[test]
fn a_storm_of_refused_connections_writes_about_one_line_a_second() {
    raise_fd_limit();
    install_logger();
    let server = start(Server::builder().max_connections(LIMIT), bundled_router());
    let addr = server.local_addr();

    let mut stats_client = hostile_stats_client(addr);
    let clients: Vec<Client> = (1..LIMIT)
        .map(|i| {
            let mut client = Client::connect(addr).expect("connect within the limit");
            // A call proves the server accepted this connection and holds a slot for it.
            let reply = client
                .call(&ECHO, &Bytes::from(format!("client {i}")))
                .unwrap_or_else(|e| panic!("client {i} within the limit is served: {e}"));
            assert_eq!(reply, format!("client {i}").as_bytes());
            client
        })
        .collect();
    let before = hostile_stats(&mut stats_client);
    assert_eq!(before.value("connections_open"), LIMIT as u64);
    assert_eq!(before.value("connections_rejected"), 0);

    let start = Instant::now();
    for i in 0..STORM {
        let stream = TcpStream::connect_timeout(&addr, STORM_LIMIT)
            .unwrap_or_else(|e| panic!("connection {i} of the storm: {e}"));
        drop(stream);
        assert!(
            start.elapsed() < STORM_LIMIT,
            "the storm took over {STORM_LIMIT:?}: {i} of {STORM} connections"
        );
    }
    let storm = start.elapsed();

    let after = hostile_wait_for_stats(&mut stats_client, WAIT_LIMIT, |r| {
        r.value("connections_rejected") >= STORM
    });
    let rejected = after.value("connections_rejected");
    assert_eq!(rejected, STORM, "every connection of the storm is refused");
    assert_eq!(
        after.value("connections_accepted"),
        LIMIT as u64,
        "none of the storm is accepted"
    );

    // The last count is written by a loop's timer sweep once a second has passed since the
    // last line.
    let waiting = Instant::now();
    let mut lines = refusal_lines();
    while accounted(&lines) < rejected && waiting.elapsed() < WAIT_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
        lines = refusal_lines();
    }
    let elapsed = start.elapsed();

    let reported: u64 = lines.iter().map(|l| suppressed_in(l)).sum();
    let by_level = |level| records().iter().filter(|(l, _)| *l == level).count();
    eprintln!(
        "{STORM} connections in {storm:?}; {rejected} refused; {} refusal lines written, \
         reporting {reported} suppressed, {elapsed:?} from the storm's start to the last \
         count; all lines: {} ERROR, {} WARN, {} INFO",
        lines.len(),
        by_level(Level::Error),
        by_level(Level::Warn),
        by_level(Level::Info),
    );
    for line in &lines {
        eprintln!("  {line}");
    }

    let bound = 2 + (elapsed.as_secs() + 1);
    assert!(
        lines.len() as u64 <= bound,
        "{} lines about refused connections in {elapsed:?}; at most {bound} expected",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| suppressed_in(l) > 0),
        "no line reports a suppressed count: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| is_refusal(l)),
        "no refusal written: {lines:?}"
    );
    assert_eq!(
        accounted(&lines),
        rejected,
        "refusals written ({}) plus the suppressed counts the lines report ({reported}) \
         against connections refused: {lines:?}",
        lines.iter().filter(|l| is_refusal(l)).count()
    );
    drop(clients);
}
