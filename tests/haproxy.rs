//! HAProxy in front of three echo-server processes, running the shipped `deploy/haproxy.cfg`
//! as is, over real sockets on 127.0.0.1: its health check's bytes are the codec's PING and
//! PONG (and the spec's); it spreads connections evenly; a server's drain (SIGTERM) costs
//! nothing to a client that sends again what a GOAWAY says was not processed; a SIGKILL costs
//! only the requests in flight to that server; the check takes a drained or dead server out
//! within inter × fall, and a restarted one back. The tests that run haproxy are skipped, with
//! a message, when it is not installed, unless `CI` is set.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::client::{Client, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Encoder, Frame};
use serde_json::Value;

use support::haproxy::{self, CheckTiming, Haproxy, SERVERS};
use support::process::Process;
use support::stats;

/// The check's ping id: the ASCII bytes "haproxy!" read as a big-endian u64.
const PING_ID: u64 = u64::from_be_bytes(*b"haproxy!");

/// Added to inter × fall (or inter × rise) for a state change to show in `show stat`: the
/// checks share two cores with the servers, the clients and haproxy.
const SLACK: Duration = Duration::from_secs(3);

/// Client threads in the load tests.
const THREADS: usize = 6;

/// A bound on each load thread's calls (they stop earlier, when told).
const MAX_CALLS: u64 = 20_000;

/// Each load thread opens a new connection every this many calls, so that new connections
/// keep arriving while a server drains or dies.
const RECONNECT_EVERY: u64 = 20;

/// Times one request is sent again after UNAVAILABLE (not processed) before it counts as
/// failed.
const MAX_RESENDS: u32 = 5;

/// The bytes of `frame` as the crate's encoder writes them.
fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    Encoder::new(0).encode(frame, &mut out).expect("encode");
    out.to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_check_sends_the_codecs_ping_and_expects_its_pong() {
    let text = haproxy::config_text();
    let (send, expect) = haproxy::check_frames(&text);
    let ping = encoded(&Frame::Ping(PING_ID));
    let pong = encoded(&Frame::Pong(PING_ID));
    assert_eq!(hex(&send), hex(&ping), "tcp-check send-binary is the PING");
    assert_eq!(
        hex(&expect),
        hex(&pong),
        "tcp-check expect binary is its PONG"
    );
    assert_eq!(ping.len(), 36, "a header and no body");
    assert_eq!(&ping[8..16], b"haproxy!", "the ping id");

    // The spec's vectors and its Section 13 show the same bytes.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto-spec/vectors/frames.json"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read frames.json"))
            .expect("frames.json is JSON");
    let vector = |name: &str| {
        doc["vectors"]
            .as_array()
            .expect("a vector list")
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hex"].as_str())
            .unwrap_or_else(|| panic!("no vector {name}"))
            .to_string()
    };
    assert_eq!(vector("ping_haproxy_check"), hex(&ping));
    assert_eq!(vector("pong_haproxy_check"), hex(&pong));
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto-spec/PROTOCOL.md"
    ))
    .expect("read PROTOCOL.md");
    for line in [
        format!("tcp-check send-binary {}", hex(&ping)),
        format!("tcp-check expect binary {}", hex(&pong)),
    ] {
        assert!(spec.contains(&line), "PROTOCOL.md shows `{line}`");
    }
}

/// An echo-server process listening on `addr` (port 0: a free one), and its address.
fn echo_server(addr: &str) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_echo-server"));
    command.args(["--addr", addr]).env("RUST_LOG", "warn");
    let process = Process::spawn(command);
    let addr = process.announced(Duration::from_secs(30));
    (process, addr)
}

/// Three echo-servers behind haproxy, every server UP with its check passed.
struct Cluster {
    /// The processes, in the order of [`SERVERS`]; dropped (killed) before haproxy.
    servers: Vec<Process>,
    addrs: [SocketAddr; 3],
    haproxy: Haproxy,
    timing: CheckTiming,
}

/// The cluster, or `None` when the test is skipped (no haproxy, no `CI`).
fn cluster(test: &str) -> Option<Cluster> {
    let binary = haproxy::binary_or_skip(test)?;
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for _ in SERVERS {
        let (process, addr) = echo_server("127.0.0.1:0");
        servers.push(process);
        addrs.push(addr);
    }
    let addrs: [SocketAddr; 3] = addrs.try_into().expect("three addresses");
    let haproxy = Haproxy::start(&binary, addrs);
    let timing = haproxy::check_timing(&haproxy::config_text());
    haproxy.wait_all_up(timing.inter * timing.rise + SLACK);
    Some(Cluster {
        servers,
        addrs,
        haproxy,
        timing,
    })
}

/// Each server's `requests_OK`, from its own admin STATS.
fn requests_ok(addrs: &[SocketAddr]) -> Vec<u64> {
    addrs
        .iter()
        .map(|addr| stats(*addr).value("requests_OK"))
        .collect()
}

fn echo(client: &mut Client, body: &str) {
    let body = Bytes::from(body.to_string());
    let echoed = client.call(&ECHO, &body).expect("echo through haproxy");
    assert_eq!(echoed, body);
}

#[test]
fn connections_and_their_requests_spread_evenly() {
    let Some(cluster) = cluster("connections_and_their_requests_spread_evenly") else {
        return;
    };
    const CONNECTIONS: usize = 30;
    const CALLS: usize = 50;
    let before = requests_ok(&cluster.addrs);

    // One at a time, each with a first call, so that haproxy has its server connection and
    // counts it for the next one's choice.
    let mut clients: Vec<Client> = (0..CONNECTIONS)
        .map(|i| {
            let mut client = Client::connect(cluster.haproxy.addr).expect("connect to haproxy");
            echo(&mut client, &format!("connection {i} call 0"));
            client
        })
        .collect();
    let stat = cluster.haproxy.show_stat();
    let open: Vec<u64> = SERVERS.iter().map(|s| stat[*s].current).collect();
    thread::scope(|scope| {
        for (t, group) in clients.chunks_mut(CONNECTIONS / 5).enumerate() {
            scope.spawn(move || {
                for call in 1..CALLS {
                    for (i, client) in group.iter_mut().enumerate() {
                        echo(client, &format!("thread {t} connection {i} call {call}"));
                    }
                }
            });
        }
    });
    drop(clients);

    let after = requests_ok(&cluster.addrs);
    let served: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    eprintln!("connections per server (show stat): {open:?}; requests per server: {served:?}");
    let total: u64 = served.iter().sum();
    let sent = (CONNECTIONS * CALLS) as u64;
    // Each STATS request is itself one more OK request on its server.
    assert!(
        (sent..=sent + 2 * SERVERS.len() as u64).contains(&total),
        "{total} requests counted for {sent} sent: {served:?}"
    );
    let even = sent as f64 / SERVERS.len() as f64;
    for (name, n) in SERVERS.iter().zip(&served) {
        assert!(
            (*n as f64 - even).abs() <= even * 0.10,
            "{name} served {n} of {sent} requests, more than 10% off {even}: {served:?}"
        );
    }
}

/// What one load thread saw.
#[derive(Debug, Default)]
struct Tally {
    /// Calls answered with their own body.
    ok: u64,
    /// Of those, the ones made after the main thread said the server was out.
    ok_after_out: u64,
    /// UNAVAILABLE answers (not processed), each sent again.
    resent: u64,
    /// Calls whose connection broke with the outcome unknown (Closed or an IO error).
    unknown: Vec<String>,
    /// Any other error.
    unexpected: Vec<String>,
}

/// Flags the main thread sets for the load threads.
#[derive(Default)]
struct Phase {
    /// The signalled server is DOWN in haproxy's eyes.
    out: AtomicBool,
    /// Stop calling.
    stop: AtomicBool,
    /// Calls answered, over every thread.
    answered: AtomicU64,
}

/// Calls echo through haproxy, from a new connection every [`RECONNECT_EVERY`] calls and
/// after a connection broke, until told to stop or [`MAX_CALLS`]. A call answered UNAVAILABLE
/// (not processed) is sent again, up to [`MAX_RESENDS`] times; a call whose connection broke
/// is not (its outcome is unknown), and counts in `unknown`.
fn load(addr: SocketAddr, thread: usize, phase: &Phase) -> Tally {
    let mut tally = Tally::default();
    let mut client: Option<Client> = None;
    for call in 0..MAX_CALLS {
        if phase.stop.load(Ordering::SeqCst) {
            break;
        }
        if call % RECONNECT_EVERY == 0 {
            client = None;
        }
        let body = Bytes::from(format!("thread {thread} call {call}"));
        let mut resends = 0;
        loop {
            let connected = match client.take() {
                Some(c) => Ok(c),
                None => Client::connect(addr),
            };
            let mut c = match connected {
                Ok(c) => c,
                Err(e) => {
                    tally
                        .unexpected
                        .push(format!("call {call}: connect: {e:?}"));
                    break;
                }
            };
            match c.call(&ECHO, &body) {
                Ok(echoed) => {
                    assert_eq!(echoed, body, "thread {thread} call {call}");
                    tally.ok += 1;
                    if phase.out.load(Ordering::SeqCst) {
                        tally.ok_after_out += 1;
                    }
                    phase.answered.fetch_add(1, Ordering::SeqCst);
                    client = Some(c);
                    break;
                }
                Err(ClientError::Status(s)) if s.code == Code::UNAVAILABLE => {
                    // A GOAWAY said the server did not process it; the client reconnects
                    // for the next request.
                    tally.resent += 1;
                    client = Some(c);
                    resends += 1;
                    if resends > MAX_RESENDS {
                        tally
                            .unexpected
                            .push(format!("call {call}: UNAVAILABLE {resends} times: {s}"));
                        break;
                    }
                }
                Err(e @ (ClientError::Closed | ClientError::Io(_))) => {
                    tally.unknown.push(format!("call {call}: {e}"));
                    break;
                }
                Err(e) => {
                    tally.unexpected.push(format!("call {call}: {e:?}"));
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    tally
}

/// Starts [`THREADS`] load threads on haproxy's address; returns once they have been
/// answered 200 calls between them.
fn start_load(addr: SocketAddr, phase: &Arc<Phase>) -> Vec<thread::JoinHandle<Tally>> {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let phase = Arc::clone(phase);
            thread::spawn(move || load(addr, t, &phase))
        })
        .collect();
    let start = Instant::now();
    while phase.answered.load(Ordering::SeqCst) < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the load threads got no answers in 30 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    threads
}

/// Lets the load run on for a moment after the server is out, stops it, and collects.
fn finish_load(phase: &Phase, threads: Vec<thread::JoinHandle<Tally>>) -> Vec<Tally> {
    phase.out.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(500));
    phase.stop.store(true, Ordering::SeqCst);
    threads
        .into_iter()
        .map(|t| t.join().expect("load thread"))
        .collect()
}

/// How long the check may take to mark a server DOWN after it stopped listening.
fn down_bound(timing: &CheckTiming) -> Duration {
    timing.inter * timing.fall + SLACK
}

#[test]
fn a_draining_server_costs_a_retrying_client_nothing() {
    let Some(mut cluster) = cluster("a_draining_server_costs_a_retrying_client_nothing") else {
        return;
    };
    let phase = Arc::new(Phase::default());
    let threads = start_load(cluster.haproxy.addr, &phase);
    let drained = &mut cluster.servers[0];
    let before = stats(cluster.addrs[0]).value("requests_OK");

    let signalled = Instant::now();
    drained.terminate();
    let down = cluster
        .haproxy
        .wait_for_status(SERVERS[0], "DOWN", Duration::from_secs(30))
        .map(|_| signalled.elapsed());
    let tallies = finish_load(&phase, threads);
    let exit = drained.wait_within(Duration::from_secs(30));

    let bound = down_bound(&cluster.timing);
    let stat = cluster.haproxy.show_stat();
    eprintln!(
        "SIGTERM: {} requests served by {} before; DOWN after {down:?} (bound {bound:?}); \
         check {}; {} refused connects moved to another server; exit {exit:?}",
        before, SERVERS[0], stat[SERVERS[0]].check_status, stat[SERVERS[0]].redispatches
    );
    for (t, tally) in tallies.iter().enumerate() {
        eprintln!(
            "  thread {t}: {} ok ({} after DOWN), {} resent after UNAVAILABLE",
            tally.ok, tally.ok_after_out, tally.resent
        );
    }
    assert!(before > 0, "the drained server had its share of the load");
    assert!(
        exit.is_some_and(|s| s.success()),
        "the drained echo-server exits 0 within 30 s: {exit:?}; stderr: {}",
        drained.stderr()
    );
    let down = down.unwrap_or_else(|| {
        panic!(
            "{} never DOWN: {stat:?}; log: {}",
            SERVERS[0],
            cluster.haproxy.log()
        )
    });
    assert!(down <= bound, "DOWN after {down:?}, over {bound:?}");
    assert_eq!(
        stat[SERVERS[0]].check_status, "L4CON",
        "its listener is closed"
    );
    // Until then leastconn chose it first (it had the fewest connections), and haproxy moved
    // the refused connects to another server: the path that kept the clients from seeing them.
    assert!(
        stat[SERVERS[0]].redispatches > 0,
        "no connect was refused and redispatched: {stat:?}"
    );
    for (t, tally) in tallies.iter().enumerate() {
        assert!(
            tally.unknown.is_empty() && tally.unexpected.is_empty(),
            "thread {t}: no request fails when a server drains: {tally:?}"
        );
        assert!(tally.ok_after_out > 0, "thread {t} carried on: {tally:?}");
    }
}

#[test]
fn a_killed_server_costs_only_its_requests_in_flight_and_comes_back() {
    let Some(mut cluster) =
        cluster("a_killed_server_costs_only_its_requests_in_flight_and_comes_back")
    else {
        return;
    };
    let killed = 1;
    let name = SERVERS[killed];
    let phase = Arc::new(Phase::default());
    let threads = start_load(cluster.haproxy.addr, &phase);
    let before = stats(cluster.addrs[killed]).value("requests_OK");

    let signalled = Instant::now();
    let status = cluster.servers[killed].kill();
    let down = cluster
        .haproxy
        .wait_for_status(name, "DOWN", Duration::from_secs(30))
        .map(|_| signalled.elapsed());
    let tallies = finish_load(&phase, threads);

    let bound = down_bound(&cluster.timing);
    let moved = cluster.haproxy.show_stat()[name].redispatches;
    eprintln!(
        "SIGKILL ({status:?}): {before} requests served by {name} before; DOWN after {down:?} \
         (bound {bound:?}); {moved} refused connects moved to another server"
    );
    for (t, tally) in tallies.iter().enumerate() {
        eprintln!(
            "  thread {t}: {} ok ({} after DOWN), unknown outcome: {:?}",
            tally.ok, tally.ok_after_out, tally.unknown
        );
    }
    assert!(before > 0, "the killed server had its share of the load");
    let down = down.unwrap_or_else(|| panic!("{name} never DOWN; log: {}", cluster.haproxy.log()));
    assert!(down <= bound, "DOWN after {down:?}, over {bound:?}");
    assert!(moved > 0, "no connect was refused and redispatched");
    for (t, tally) in tallies.iter().enumerate() {
        // One call in flight per thread at a time: at most that one was on the killed server.
        assert!(
            tally.unknown.len() <= 1 && tally.unexpected.is_empty(),
            "thread {t}: only a call in flight to the killed server fails: {tally:?}"
        );
        assert!(tally.ok_after_out > 0, "thread {t} carried on: {tally:?}");
    }

    // Restarted on the same port: haproxy's check takes it back, and new connections reach
    // it (leastconn: it has the fewest).
    let (process, addr) = echo_server(&cluster.addrs[killed].to_string());
    assert_eq!(addr, cluster.addrs[killed]);
    cluster.servers[killed] = process;
    let up_bound = cluster.timing.inter * cluster.timing.rise + SLACK;
    let up = cluster
        .haproxy
        .wait_for_status(name, "UP", up_bound)
        .unwrap_or_else(|| {
            panic!(
                "{name} not UP within {up_bound:?} of its restart: {:?}; log: {}",
                cluster.haproxy.show_stat(),
                cluster.haproxy.log()
            )
        });
    assert_eq!(cluster.haproxy.show_stat()[name].check_status, "L7OK");
    let first = stats(addr).value("requests_OK");
    let mut clients: Vec<Client> = (0..SERVERS.len() * 2)
        .map(|i| {
            let mut client = Client::connect(cluster.haproxy.addr).expect("connect to haproxy");
            echo(&mut client, &format!("after the restart: connection {i}"));
            client
        })
        .collect();
    for call in 1..20 {
        for (i, client) in clients.iter_mut().enumerate() {
            echo(
                client,
                &format!("after the restart: connection {i} call {call}"),
            );
        }
    }
    let served = stats(addr).value("requests_OK") - first;
    eprintln!(
        "restart: UP {up:?} after it listened (bound {up_bound:?}); it served {served} of {} \
         requests on new connections",
        clients.len() * 20
    );
    assert!(
        served >= 20,
        "the restarted server serves new connections: {served} requests"
    );
}
