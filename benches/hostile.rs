//! Latency of one well-behaved client while hostile peers attack the same server.
//!
//! Run: `cargo bench --bench hostile`. Prints one table to stdout (progress goes to stderr).
//!
//! An in-process server (echo, kv, and a blocking method that sleeps 1 s) runs with the
//! default limits and one event loop per core but the normal client's (one on a 2-core
//! machine), except that the frame and write timeouts are 2 s so that the slowloris and
//! the non-reading pipeliner are cut off within the run. A normal client makes 64-byte echo
//! calls back to back for a fixed window, and every call's latency goes into an HDR
//! histogram: with no attack (a baseline), then while an attack runs from other threads, for
//! each attack in turn, so that every attack has a baseline measured just before it. The whole
//! sequence runs [`ROUNDS`] times; the table shows medians over the rounds (over every
//! baseline, for the baseline row), and the p99 ratio is the median over rounds of
//! p99(attack) / p99(the baseline just before it).
//!
//! A prober also opens a fresh connection every 100 ms of the window and makes one echo call
//! on it; the table shows the slowest of those (connect included), in milliseconds.
//!
//! The last column shows the server's own counters (read through the admin STATS method) that
//! prove each defence engaged: counters as the change over the attack, gauges (marked `@`) as
//! read at the end of the measuring window, while the attack still ran.
//!
//! The attackers run in this process and share the cores with the server and the normal
//! client. Their threads run at nice 19, so that they take the CPU the server and the normal
//! client leave over, as an attacker on another machine would take none of it; on a 2-core
//! machine an attack that burns CPU (the floods, the churn) still slows the normal client
//! partly through that contention. Other load on the machine comes and goes, hence a baseline
//! next to each attack.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::admin::{StatsReport, STATS};
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Encoder, Frame, FrameKind, Metadata, Request, HEADER_LEN, MAGIC};
use courier_rpc::server::{RunningServer, Server};
use courier_rpc::service::{Method, Router};
use hdrhistogram::Histogram;

/// Times the whole sequence (every attack, each after a baseline) is run.
const ROUNDS: usize = 3;
/// Time an attack runs before the normal client starts measuring.
const WARMUP: Duration = Duration::from_secs(1);
/// Time the normal client measures for, in every phase.
const WINDOW: Duration = Duration::from_secs(3);
/// Time between two fresh-connection probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes of each normal echo call.
const PAYLOAD_LEN: usize = 64;
/// The shortened timeouts (defaults 30 s): short enough to trip within one phase.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A blocking method that sleeps 1 s: runs on the server's worker pool.
const SLEEP: Method<Bytes, Bytes> = Method::new(100, 1, "bench.Sleep");

const SLOWLORIS_CONNECTIONS: usize = 1000;
const SLOWLORIS_THREADS: usize = 4;
const SLOWLORIS_INTERVAL: Duration = Duration::from_millis(200);
const PIPELINE_BODY: usize = 64 * 1024;
const PING_FLOODERS: usize = 2;
const PINGS_PER_WRITE: usize = 512;
const PONGS_PER_CONNECTION: usize = 128;
const CHURN_THREADS: usize = 2;
const OVERSIZED_THREADS: usize = 1;
const BLOCKING_CLIENTS: usize = 20;

/// How a counter is shown: its change over the attack, or its value at the end of the window.
#[derive(Clone, Copy)]
enum Show {
    Delta(&'static str),
    During(&'static str),
}

type Start = fn(SocketAddr, &Arc<AtomicBool>, &Arc<AtomicU64>) -> Vec<JoinHandle<()>>;

struct Attack {
    name: &'static str,
    /// What the attacker counts in `ops`.
    ops: &'static str,
    start: Option<Start>,
    show: &'static [Show],
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "baseline (no attack)",
        ops: "",
        start: None,
        show: &[Show::Delta("requests_OK")],
    },
    Attack {
        name: "slowloris x1000",
        ops: "reconnects",
        start: Some(slowloris),
        show: &[
            Show::During("connections_open"),
            Show::Delta("closed_frame_timeout"),
            Show::Delta("connections_rejected"),
        ],
    },
    Attack {
        name: "pipeline 64KiB, never reads",
        ops: "requests written",
        start: Some(pipeline_no_read),
        show: &[
            Show::Delta("output_paused"),
            Show::Delta("closed_write_timeout"),
            Show::Delta("closed_output_cap"),
            Show::During("output_peak"),
        ],
    },
    Attack {
        name: "PONG flood (asks nothing)",
        ops: "PONG connections cut",
        start: Some(pong_flood),
        show: &[Show::Delta("closed_flood"), Show::Delta("frames_in")],
    },
    Attack {
        name: "PING flood x2, reading",
        ops: "",
        start: Some(ping_flood),
        show: &[Show::Delta("turn_yields"), Show::Delta("frames_in")],
    },
    Attack {
        name: "connect/partial/reset churn",
        ops: "connections",
        start: Some(churn),
        show: &[
            Show::Delta("connections_accepted"),
            Show::Delta("closed_io"),
            Show::Delta("accept_errors"),
        ],
    },
    Attack {
        name: "oversized length 2^32-1",
        ops: "ERRORs received",
        start: Some(oversized),
        show: &[
            Show::Delta("decode_errors_FRAME_TOO_LARGE"),
            Show::Delta("closed_protocol"),
            Show::During("buffered_bytes"),
        ],
    },
    Attack {
        name: "blocking 1 s handler x20",
        ops: "calls answered",
        start: Some(blocking_callers),
        show: &[
            Show::During("blocking_in_flight"),
            Show::Delta("blocking_rejected"),
            Show::Delta("in_flight_paused"),
        ],
    },
];

/// One phase's result.
struct Sample {
    p50: u64,
    p99: u64,
    p999: u64,
    calls: u64,
    errors: u64,
    /// p99 of the baseline measured just before this attack.
    paired_p99: Option<u64>,
    /// The slowest fresh connection's connect plus first echo call, in microseconds.
    probe_max: u64,
    ops: u64,
    counters: Vec<u64>,
}

fn main() {
    let fds = raise_fd_limit();
    let server = start_server();
    let addr = server.local_addr();
    let mut admin = Admin::new(addr);
    eprintln!(
        "hostile: server on {addr}, open-file limit {fds}, {ROUNDS} rounds of {} attacks, \
         each after a baseline ({} s attack warm-up, {} s window)",
        ATTACKS.len() - 1,
        WARMUP.as_secs(),
        WINDOW.as_secs()
    );
    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = ATTACKS.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for i in 1..ATTACKS.len() {
            let baseline_p99 = phase(round, 0, addr, &mut admin, &mut samples, started);
            phase(round, i, addr, &mut admin, &mut samples, started);
            if let Some(sample) = samples[i].last_mut() {
                sample.paired_p99 = Some(baseline_p99);
            }
        }
    }
    print_table(&samples);
    server.shutdown().expect("server stops cleanly");
}

/// Runs attack `i` once, logs it to stderr, keeps its sample; returns its p99.
fn phase(
    round: usize,
    i: usize,
    addr: SocketAddr,
    admin: &mut Admin,
    samples: &mut [Vec<Sample>],
    started: Instant,
) -> u64 {
    let attack = &ATTACKS[i];
    let sample = run_phase(addr, admin, attack);
    eprintln!(
        "round {round} {:<28} p50 {:>6} us  p99 {:>6} us  p99.9 {:>6} us  calls {:>6}  \
         errors {}  new conn {:.1} ms  ops {}  counters {:?}  [{:.0} s]",
        attack.name,
        sample.p50,
        sample.p99,
        sample.p999,
        sample.calls,
        sample.errors,
        sample.probe_max as f64 / 1000.0,
        sample.ops,
        sample.counters,
        started.elapsed().as_secs_f64()
    );
    let p99 = sample.p99;
    samples[i].push(sample);
    p99
}

fn start_server() -> RunningServer {
    let mut router = Router::new();
    courier_rpc::echo::register(&mut router);
    courier_rpc::kv::register(&mut router, Arc::new(courier_rpc::kv::Store::new()));
    router.register_blocking(SLEEP, |_ctx, body: Bytes| {
        thread::sleep(Duration::from_secs(1));
        Ok(body)
    });
    // The cores the normal client leaves free, as benches/compare.sh does: a loop on the
    // client's core would fight it for that core.
    let loops = courier_rpc::server::default_loops()
        .saturating_sub(1)
        .max(1);
    Server::builder()
        .addr("127.0.0.1:0".parse().expect("valid address"))
        .loops(loops)
        .frame_timeout(FRAME_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .bind(router)
        .expect("server binds")
        .spawn()
        .expect("server thread starts")
}

/// Raises this process's soft limit on open files to its hard limit: both ends of every
/// attacking connection live in this process. Returns the soft limit in force.
fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit, only read during the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        limit.rlim_cur
    }
}

/// Reads the server's counters over the wire with the admin STATS method, on one connection
/// kept for the whole run (reconnecting if it is lost).
struct Admin {
    addr: SocketAddr,
    client: Option<Client>,
}

impl Admin {
    fn new(addr: SocketAddr) -> Self {
        Admin { addr, client: None }
    }

    fn stats(&mut self) -> StatsReport {
        for _ in 0..3 {
            if self.client.is_none() {
                self.client = Client::builder()
                    .read_timeout(Duration::from_secs(10))
                    .connect(self.addr)
                    .ok();
            }
            if let Some(client) = &mut self.client {
                match client.call(&STATS, &()) {
                    Ok(report) => return report,
                    Err(err) => {
                        eprintln!("STATS failed ({err}); reconnecting");
                        self.client = None;
                    }
                }
            }
        }
        panic!("the server does not answer STATS");
    }

    /// Waits (at most 5 s) until only the admin connection is open, so that one attack's
    /// leftovers do not run into the next phase.
    fn wait_drained(&mut self) {
        let start = Instant::now();
        while self.stats().value("connections_open") > 1 && start.elapsed() < Duration::from_secs(5)
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn run_phase(addr: SocketAddr, admin: &mut Admin, attack: &Attack) -> Sample {
    admin.wait_drained();
    // Connected before the attack starts: connection set-up is not what is measured.
    let client = Client::builder()
        .read_timeout(Duration::from_secs(5))
        .connect(addr)
        .expect("normal client connects");
    let before = admin.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let threads = attack
        .start
        .map_or_else(Vec::new, |start| start(addr, &stop, &ops));
    if attack.start.is_some() {
        thread::sleep(WARMUP);
    }
    let probing = Arc::new(AtomicBool::new(true));
    let prober = probe(addr, &probing);
    let (hist, calls, errors) = measure(addr, client);
    probing.store(false, Ordering::SeqCst);
    let probe_max = prober.join().expect("prober does not panic");
    let during = admin.stats();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("attack thread does not panic");
    }
    let after = admin.stats();
    let counters = attack
        .show
        .iter()
        .map(|show| match *show {
            Show::Delta(name) => after.value(name).wrapping_sub(before.value(name)),
            Show::During(name) => during.value(name),
        })
        .collect();
    Sample {
        p50: hist.value_at_quantile(0.50),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        calls,
        errors,
        paired_p99: None,
        probe_max,
        ops: ops.load(Ordering::Relaxed),
        counters,
    }
}

/// The normal client: 64-byte echo calls back to back for [`WINDOW`]; latency in
/// microseconds. A failed call counts as an error (its time is recorded too) and the client
/// reconnects.
fn measure(addr: SocketAddr, mut client: Client) -> (Histogram<u64>, u64, u64) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let payload = Bytes::from(vec![0x5A; PAYLOAD_LEN]);
    let (mut calls, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        let t = Instant::now();
        let result = client.call(&ECHO, &payload);
        hist.saturating_record(t.elapsed().as_micros() as u64);
        calls += 1;
        match result {
            Ok(reply) if reply == payload => {}
            Ok(_) => panic!("echo answered a different payload"),
            Err(err) => {
                errors += 1;
                eprintln!("normal client: {err}; reconnecting");
                client = Client::builder()
                    .read_timeout(Duration::from_secs(5))
                    .connect(addr)
                    .expect("normal client reconnects");
            }
        }
    }
    (hist, calls, errors)
}

/// Every [`PROBE_INTERVAL`] while `running`: a new connection and one echo call on it.
/// Returns the slowest, in microseconds (a failure counts as its time until it failed).
fn probe(addr: SocketAddr, running: &Arc<AtomicBool>) -> JoinHandle<u64> {
    let running = Arc::clone(running);
    thread::Builder::new()
        .name("prober".into())
        .spawn(move || {
            let payload = Bytes::from(vec![0x3C; PAYLOAD_LEN]);
            let mut slowest = 0;
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                let result = Client::builder()
                    .read_timeout(Duration::from_secs(5))
                    .connect(addr)
                    .and_then(|mut client| client.call(&ECHO, &payload));
                slowest = slowest.max(t.elapsed().as_micros() as u64);
                if let Err(err) = result {
                    eprintln!("prober: {err}");
                }
                thread::sleep(PROBE_INTERVAL);
            }
            slowest
        })
        .expect("prober starts")
}

fn print_table(samples: &[Vec<Sample>]) {
    println!();
    println!(
        "Normal client: {PAYLOAD_LEN}-byte echo calls for {} s per phase; medians of {ROUNDS} \
         rounds; latency in microseconds.",
        WINDOW.as_secs()
    );
    println!(
        "New conn = slowest of the fresh connections opened every {} ms (connect + one echo \
         call), in ms.",
        PROBE_INTERVAL.as_millis()
    );
    println!(
        "Ratio = median over rounds of p99(attack) / p99(the baseline just before it). Server \
         counters: change over the phase; @ = gauge at the end of the window."
    );
    println!();
    println!(
        "| {:<28} | {:>7} | {:>7} | {:>7} | {:>9} | {:>12} | {:>7} | {:>6} | {:<26} | server counters |",
        "attack", "p50", "p99", "p99.9", "p99 ratio", "new conn ms", "calls", "errors", "attacker"
    );
    println!(
        "|{:-<30}|{:->9}|{:->9}|{:->9}|{:->11}|{:->14}|{:->9}|{:->8}|{:-<28}|-----------------|",
        "", "", "", "", "", "", "", "", ""
    );
    for (attack, rounds) in ATTACKS.iter().zip(samples) {
        let med = |f: &dyn Fn(&Sample) -> u64| median(rounds.iter().map(f).collect());
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|s| s.paired_p99.map_or(1.0, |b| s.p99 as f64 / b.max(1) as f64))
            .collect();
        let attacker = if attack.ops.is_empty() {
            "-".to_string()
        } else {
            format!("{} {}", med(&|s| s.ops), attack.ops)
        };
        let counters: Vec<String> = attack
            .show
            .iter()
            .enumerate()
            .map(|(i, show)| {
                let value = med(&|s| s.counters[i]);
                match show {
                    Show::Delta(name) => format!("{name} +{value}"),
                    Show::During(name) => format!("{name} @{value}"),
                }
            })
            .collect();
        println!(
            "| {:<28} | {:>7} | {:>7} | {:>7} | {:>9.2} | {:>12.1} | {:>7} | {:>6} | {:<26} | {} |",
            attack.name,
            med(&|s| s.p50),
            med(&|s| s.p99),
            med(&|s| s.p999),
            median_f64(ratios),
            med(&|s| s.probe_max) as f64 / 1000.0,
            med(&|s| s.calls),
            rounds.iter().map(|s| s.errors).sum::<u64>(),
            attacker,
            counters.join(", ")
        );
    }
    println!();
    println!(
        "(baseline row: medians over all {} baselines; errors: normal-client calls that failed, \
         summed)",
        samples[0].len()
    );
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---------------------------------------------------------------------------------------
// Raw sockets and frames for the attackers.

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Closes with a reset (SO_LINGER 0): no FIN, no TIME_WAIT, whatever is unread is dropped.
fn reset_close(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is an open socket owned by `stream` for the whole call; `linger`
    // is an initialised `struct linger` whose exact size is passed, and the call only reads it.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn simple_frame(kind: FrameKind, id: u64) -> BytesMut {
    let mut buf = BytesMut::new();
    Encoder::new(1024).encode_simple(&mut buf, kind, id, Code::OK, "");
    buf
}

fn repeated(kind: FrameKind, count: usize) -> Vec<u8> {
    (0..count as u64)
        .flat_map(|id| simple_frame(kind, id))
        .collect()
}

/// A REQUEST header for echo that claims a body of 2^32-1 bytes, with valid CRCs.
fn oversized_header() -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&[1, 1, 0, 0]); // version 1, REQUEST, no flags
    head.extend_from_slice(&7u64.to_be_bytes());
    head.extend_from_slice(
        &((u32::from(ECHO.service) << 16) | u32::from(ECHO.method)).to_be_bytes(),
    );
    head.extend_from_slice(&0u32.to_be_bytes()); // deadline
    head.extend_from_slice(&u32::MAX.to_be_bytes()); // body length
    head.extend_from_slice(&0u32.to_be_bytes()); // body CRC-32 (never sent)
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_be_bytes());
    head
}

/// Writes all of `buf`, giving up (`false`) when `stop` is set or the socket fails. The socket
/// must have a write timeout, so that a full send buffer does not block past `stop`.
fn write_all_until(stream: &mut TcpStream, mut buf: &[u8], stop: &AtomicBool) -> bool {
    while !buf.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match stream.write(buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Starts an attack thread at the lowest scheduling priority (nice 19), so that it takes the
/// CPU the server and the normal client leave over: a stand-in for an attacker on another
/// machine, on a machine with only a couple of cores.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: gettid and setpriority take and return plain integers and touch no
            // memory of ours; on Linux, PRIO_PROCESS with a thread id applies to that thread.
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 19);
            }
            body();
        })
        .expect("attack thread starts")
}

// ---------------------------------------------------------------------------------------
// The attacks. Each runs until `stop` is set and counts its own progress in `ops`.

/// 1,000 connections that each send the first 4 bytes of a PING header, then one more byte
/// every 200 ms; one that the server cuts off (its ERROR arrives) is reset and replaced.
fn slowloris(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    const FIRST: usize = 4;
    let frame = simple_frame(FrameKind::Ping, 1).to_vec();
    (0..SLOWLORIS_THREADS)
        .map(|_| {
            let (stop, ops, frame) = (Arc::clone(stop), Arc::clone(ops), frame.clone());
            spawn("slowloris", move || {
                let open = |frame: &[u8]| -> Option<(TcpStream, usize)> {
                    let mut s = connect(addr).ok()?;
                    s.write_all(&frame[..FIRST]).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some((s, FIRST))
                };
                let mut conns: Vec<Option<(TcpStream, usize)>> = (0..SLOWLORIS_CONNECTIONS
                    / SLOWLORIS_THREADS)
                    .map(|_| open(&frame))
                    .collect();
                let mut scratch = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    let tick = Instant::now();
                    for slot in &mut conns {
                        let cut = match slot {
                            None => true,
                            Some((s, sent)) => {
                                let cut = !matches!(
                                    s.read(&mut scratch),
                                    Err(ref e) if e.kind() == io::ErrorKind::WouldBlock
                                );
                                // Never the last byte: the frame stays incomplete for ever.
                                if !cut && *sent < frame.len() - 1 {
                                    if let Ok(n) = s.write(&frame[*sent..*sent + 1]) {
                                        *sent += n;
                                    }
                                }
                                cut
                            }
                        };
                        if cut {
                            if let Some((s, _)) = slot.take() {
                                reset_close(s);
                            }
                            ops.fetch_add(1, Ordering::Relaxed);
                            *slot = open(&frame);
                        }
                    }
                    if let Some(rest) = SLOWLORIS_INTERVAL.checked_sub(tick.elapsed()) {
                        thread::sleep(rest);
                    }
                }
                for (s, _) in conns.into_iter().flatten() {
                    reset_close(s);
                }
            })
        })
        .collect()
}

/// One client writing 64 KiB echo requests back to back and never reading a byte; when the
/// server closes it, it reconnects and goes on.
fn pipeline_no_read(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
    vec![spawn("pipeline", move || {
        let encoder = Encoder::new(u32::MAX);
        let payload = Bytes::from(vec![0xA5; PIPELINE_BODY]);
        let mut id = 0u64;
        let mut wire = BytesMut::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = connect(addr) else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            loop {
                id += 1;
                wire.clear();
                let request = Frame::Request(Request {
                    request_id: id,
                    service: ECHO.service,
                    method: ECHO.method,
                    deadline_ms: 0,
                    metadata: Metadata::new(),
                    payload: payload.clone(),
                });
                encoder.encode(&request, &mut wire).expect("encodes");
                if !write_all_until(&mut stream, &wire, &stop) {
                    break;
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            reset_close(stream);
        }
    })]
}

/// Two clients writing PING frames as fast as they can, a reader thread each draining the
/// PONGs: tiny frames that are each answered, which the server treats as a legitimate client
/// pipelining at full speed (it is not cut off; the per-turn frame budget keeps it fair).
fn ping_flood(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    _ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    let pings = repeated(FrameKind::Ping, PINGS_PER_WRITE);
    for _ in 0..PING_FLOODERS {
        let mut writer = connect(addr).expect("ping flooder connects");
        let mut reader = writer.try_clone().expect("socket clones");
        let _ = writer.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = reader.set_read_timeout(Some(Duration::from_millis(100)));
        let (stop_w, pings) = (Arc::clone(stop), pings.clone());
        threads.push(spawn("ping-flood", move || {
            while write_all_until(&mut writer, &pings, &stop_w) {}
            reset_close(writer);
        }));
        let stop_r = Arc::clone(stop);
        threads.push(spawn("ping-drain", move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop_r.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    threads
}

/// One client sending runs of 128 PONG frames (frames that ask for nothing): the server cuts
/// it off after 100, and it reconnects and goes on.
fn pong_flood(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
    let pongs = repeated(FrameKind::Pong, PONGS_PER_CONNECTION);
    threads.push(spawn("pong-flood", move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = connect(addr) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            // The server's ERROR RESOURCE_EXHAUSTED (kind 6) is the sign it cut us off.
            if stream.write_all(&pongs).is_ok()
                && matches!(stream.read(&mut buf), Ok(n) if n > 5 && buf[5] == 6)
            {
                ops.fetch_add(1, Ordering::Relaxed);
            }
            reset_close(stream);
        }
    }));
    threads
}

/// Connections that send 20 bytes of a header and reset, in a loop.
fn churn(addr: SocketAddr, stop: &Arc<AtomicBool>, ops: &Arc<AtomicU64>) -> Vec<JoinHandle<()>> {
    let partial = simple_frame(FrameKind::Ping, 3)[..20].to_vec();
    (0..CHURN_THREADS)
        .map(|_| {
            let (stop, ops, partial) = (Arc::clone(stop), Arc::clone(ops), partial.clone());
            spawn("churn", move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut stream) = connect(addr) {
                        let _ = stream.write_all(&partial);
                        reset_close(stream);
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// New connections, each sending a header that claims 2^32-1 body bytes and reading the
/// server's ERROR, in a loop.
fn oversized(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let header = oversized_header();
    (0..OVERSIZED_THREADS)
        .map(|_| {
            let (stop, ops, header) = (Arc::clone(stop), Arc::clone(ops), header.clone());
            spawn("oversized", move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = connect(addr) else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    if stream.write_all(&header).is_ok()
                        && matches!(stream.read(&mut buf), Ok(n) if n > 5 && buf[5] == 6)
                    {
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    reset_close(stream);
                }
            })
        })
        .collect()
}

/// 20 clients calling the blocking method (it sleeps 1 s on a worker) back to back.
fn blocking_callers(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    ops: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    (0..BLOCKING_CLIENTS)
        .map(|_| {
            let (stop, ops) = (Arc::clone(stop), Arc::clone(ops));
            spawn("blocking", move || {
                let mut client = Client::builder()
                    .read_timeout(Duration::from_secs(10))
                    .connect(addr)
                    .expect("blocking caller connects");
                while !stop.load(Ordering::Relaxed) {
                    match client.call(&SLEEP, &Bytes::new()) {
                        Ok(_) => {
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            eprintln!("blocking caller: {err}");
                            break;
                        }
                    }
                }
            })
        })
        .collect()
}
