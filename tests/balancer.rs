//! The balancing client over real servers on 127.0.0.1: power of two choices against a slow
//! server, the retry budget against a retry storm, and three kv shards (kv-server processes)
//! through a drain and restart and through SIGKILL.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_rpc::client::balance::{Balancer, Health, RetryBudget};
use courier_rpc::client::{CallOptions, Client, ClientError};
use courier_rpc::kv::{Key, SetRequest, Value, GET, SET};
use courier_rpc::proto::Code;
use courier_rpc::server::{RunningServer, Server};
use courier_rpc::service::{Method, Router};
use courier_rpc::Status;
use support::kv_process::{lock, Server as KvServer};
use support::TempDir;

/// A method every test server here serves: answers its request.
const WORK: Method<Bytes, Bytes> = Method::new(40, 1, "work.Do");

/// A server whose WORK handler counts its calls, and waits `delay` (on a worker) first, or
/// answers UNAVAILABLE when `refuse`.
fn work_server(delay: Duration, refuse: bool) -> (RunningServer, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let mut router = Router::new();
    let handler = move |_: &courier_rpc::Context, body: Bytes| {
        counted.fetch_add(1, Ordering::Relaxed);
        if refuse {
            return Err(Status::new(Code::UNAVAILABLE, "refusing every request"));
        }
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        Ok(body)
    };
    if delay.is_zero() {
        router.register(WORK, handler);
    } else {
        router.register_blocking(WORK, handler);
    }
    let server = support::start(Server::builder().workers(16), router);
    (server, calls)
}

fn names(addrs: &[SocketAddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

#[test]
fn power_of_two_choices_sends_fewer_requests_to_a_slow_server() {
    let servers: Vec<_> = [Duration::ZERO, Duration::ZERO, Duration::from_millis(5)]
        .into_iter()
        .map(|delay| work_server(delay, false))
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(s, _)| s.local_addr()).collect();
    let balancer = Balancer::builder().build(names(&addrs)).expect("build");
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let balancer = balancer.clone();
            thread::spawn(move || {
                for i in 0..300 {
                    let body = Bytes::from(format!("{t}-{i}"));
                    assert_eq!(balancer.call(&WORK, &body).expect("call"), body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    let counts: Vec<u64> = servers
        .iter()
        .map(|(_, calls)| calls.load(Ordering::Relaxed))
        .collect();
    eprintln!("requests per server (fast, fast, slow): {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 1800);
    let stats = balancer.stats();
    assert_eq!(
        (stats.requests, stats.attempts, stats.retries),
        (1800, 1800, 0)
    );
    // The slow server spends 5 ms per request where the others spend microseconds: it holds
    // requests outstanding, and loses the draws it is in.
    assert!(
        counts[2] * 3 < counts[0].min(counts[1]),
        "the slow server got {} requests, the fast ones {} and {}",
        counts[2],
        counts[0],
        counts[1]
    );
}

#[test]
fn the_retry_budget_stops_a_retry_storm_when_every_server_refuses() {
    let servers: Vec<_> = (0..3).map(|_| work_server(Duration::ZERO, true)).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(s, _)| s.local_addr()).collect();
    let served = || -> u64 { servers.iter().map(|(_, c)| c.load(Ordering::Relaxed)).sum() };

    // Without a budget, every request is tried three times.
    let unbounded = Balancer::builder()
        .retry_budget(RetryBudget::new(1000.0, 1000, 1_000_000))
        .build(names(&addrs))
        .expect("build");
    for _ in 0..200 {
        let err = unbounded.call(&WORK, &Bytes::new()).expect_err("refused");
        assert_eq!(err.status().map(|s| s.code), Some(Code::UNAVAILABLE));
    }
    assert_eq!(served(), 600);
    assert_eq!(unbounded.stats().attempts, 600);

    // With the default budget: 10 retries to start, then 0.2 per request.
    let before = served();
    let budgeted = Balancer::builder().build(names(&addrs)).expect("build");
    for _ in 0..200 {
        let err = budgeted.call(&WORK, &Bytes::new()).expect_err("refused");
        assert_eq!(err.status().map(|s| s.code), Some(Code::UNAVAILABLE));
    }
    let stats = budgeted.stats();
    let attempts = served() - before;
    eprintln!(
        "every server refusing, 200 requests: {attempts} attempts with the budget ({} retries, {} refused by it), 600 without",
        stats.retries, stats.retries_refused
    );
    assert_eq!(stats.attempts, attempts, "every attempt reached a server");
    assert_eq!(stats.attempts, 200 + stats.retries);
    assert!(stats.retries <= 10 + 40, "{stats:?}");
    assert!(stats.retries >= 40, "{stats:?}");
    assert!(stats.retries_refused > 0);
}

/// A TCP port bound and not listening: a connect to it is refused, and no other socket can
/// take the port while this one holds it (a port freed by dropping a listener could be taken
/// by a server another test starts at the same time).
struct DeadPort {
    fd: libc::c_int,
    addr: SocketAddr,
}

impl DeadPort {
    fn new() -> DeadPort {
        // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sin` is a valid, initialised sockaddr_in of `len` bytes, borrowed for the
        // call; `fd` is the socket made above.
        let rc = unsafe { libc::bind(fd, std::ptr::addr_of!(sin).cast(), len) };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut out_len = len;
        // SAFETY: getsockname writes at most `out_len` bytes into `sin`, which we own and
        // borrow mutably for the call, and updates `out_len`.
        let rc = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(sin).cast(), &mut out_len) };
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port)));
        DeadPort { fd, addr }
    }
}

impl Drop for DeadPort {
    fn drop(&mut self) {
        // SAFETY: `fd` is this value's own open descriptor, closed once, here.
        unsafe { libc::close(self.fd) };
    }
}

#[test]
fn the_retry_budget_bounds_connection_attempts_when_every_server_is_down() {
    // Three ports nobody listens on.
    let dead: Vec<DeadPort> = (0..3).map(|_| DeadPort::new()).collect();
    let addrs: Vec<SocketAddr> = dead.iter().map(|d| d.addr).collect();
    let balancer = Balancer::builder()
        .health_interval(Duration::from_secs(3600))
        .build(names(&addrs))
        .expect("build");
    for _ in 0..100 {
        match balancer.call(&WORK, &Bytes::new()) {
            Err(ClientError::Io(err)) => {
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }
    let stats = balancer.stats();
    eprintln!(
        "every server down, 100 requests: {} connection attempts ({} retries, {} refused by the budget)",
        stats.attempts, stats.retries, stats.retries_refused
    );
    assert!(stats.attempts <= 100 + 10 + 20, "{stats:?}");
    assert!(stats.servers.iter().all(|s| s.health == Health::Ejected));
}

/// Three kv shards, each a kv-server process with its own log.
struct Shards {
    dirs: Vec<TempDir>,
    servers: Vec<KvServer>,
}

impl Shards {
    fn start(tag: &str) -> Shards {
        let dirs: Vec<TempDir> = (0..3)
            .map(|i| TempDir::new(&format!("{tag}-{i}")))
            .collect();
        let servers = dirs
            .iter()
            .map(|dir| KvServer::start(dir.path(), &["--fsync", "always"]))
            .collect();
        Shards { dirs, servers }
    }

    fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.to_string()).collect()
    }

    /// Starts shard `i` again on its port and its log.
    fn restart(&mut self, i: usize) {
        let addr = self.servers[i].addr.to_string();
        let command = KvServer::command_on(&addr, self.dirs[i].path(), &["--fsync", "always"]);
        // The port may take a moment to be free of the old process.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match KvServer::launch(command_clone(&command)) {
                Ok(server) => {
                    self.servers[i] = server;
                    return;
                }
                Err(exited) if Instant::now() < until => {
                    eprintln!("restart of shard {i} failed, again: {:?}", exited.stderr);
                    thread::sleep(Duration::from_millis(50));
                }
                Err(exited) => panic!("shard {i} does not restart: {exited:?}"),
            }
        }
    }
}

fn command_clone(command: &std::process::Command) -> std::process::Command {
    let mut copy = std::process::Command::new(command.get_program());
    copy.args(command.get_args());
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            copy.env(k, v);
        }
    }
    copy.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    copy
}

/// What each writer thread had acknowledged, by key.
type Acked = Arc<Mutex<HashMap<String, Bytes>>>;

/// `threads` threads, each writing and reading back its own keys through `balancer` until
/// `stop`, at most `max_ops` operations each; returns the failures: (key, error).
fn load(
    balancer: &Balancer,
    threads: usize,
    max_ops: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    acked: &Acked,
    done: &Arc<AtomicU64>,
) -> Vec<thread::JoinHandle<Vec<(String, ClientError)>>> {
    (0..threads)
        .map(|t| {
            let balancer = balancer.clone();
            let stop = Arc::clone(stop);
            let acked = Arc::clone(acked);
            let done = Arc::clone(done);
            thread::spawn(move || {
                let mut failures = Vec::new();
                let options = CallOptions::default().with_deadline(Duration::from_secs(15));
                for i in 0..max_ops {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("t{t}-k{}", i % 50);
                    let value = Bytes::from(format!("{t}-{i}"));
                    let set = SetRequest {
                        key: Bytes::from(key.clone()),
                        value: value.clone(),
                    };
                    match balancer.call_key_with(key.as_bytes(), &SET, &set, &options) {
                        Ok(()) => {
                            lock(&acked).insert(key.clone(), value.clone());
                        }
                        Err(err) => {
                            failures.push((key.clone(), err));
                            continue;
                        }
                    }
                    let get = Key(Bytes::from(key.clone()));
                    match balancer.call_key_with(key.as_bytes(), &GET, &get, &options) {
                        Ok(Value(read)) => assert_eq!(read, value, "{key}"),
                        Err(err) => failures.push((key.clone(), err)),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect()
}

fn wait_for(done: &AtomicU64, at_least: u64) {
    let until = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < until, "the load made no progress");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Every acknowledged write is on the shard that owns its key, read with a plain client.
fn check_acked(shards: &Shards, balancer: &Balancer, acked: &Acked) {
    let mut clients: Vec<Client> = shards.servers.iter().map(KvServer::client).collect();
    let acked = lock(acked);
    assert!(!acked.is_empty());
    for (key, value) in acked.iter() {
        let owner = balancer.owner(key.as_bytes());
        let Value(read) = clients[owner]
            .call(&GET, &Key(Bytes::from(key.clone())))
            .unwrap_or_else(|e| panic!("{key} on shard {owner}: {e}"));
        assert_eq!(&read, value, "{key}");
    }
}

#[test]
fn kv_shards_drained_and_restarted_fail_no_request() {
    let mut shards = Shards::start("balancer-drain");
    let balancer = Balancer::builder()
        .health_interval(Duration::from_millis(100))
        .wait_for_ready(true)
        .build(shards.names())
        .expect("build");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let workers = load(&balancer, 4, 100_000, &stop, &acked, &done);
    wait_for(&done, 200);
    // A rolling restart of shard 1: drain (SIGTERM), exit, start again on its port and log.
    shards.servers[1].stop_cleanly();
    let during = done.load(Ordering::Relaxed);
    shards.restart(1);
    let restarted = done.load(Ordering::Relaxed);
    wait_for(&done, restarted + 400);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("load thread"))
        .collect();
    let stats = balancer.stats();
    eprintln!(
        "drain and restart of shard 1: {} operations, {} while it was down, {} failed; {} retries; shard 1 {:?}",
        done.load(Ordering::Relaxed),
        restarted - during,
        failures.len(),
        stats.retries,
        stats.servers[1]
    );
    assert!(failures.is_empty(), "failed: {failures:?}");
    assert!(stats.servers[1].ejections >= 1, "{stats:?}");
    assert_eq!(balancer.health(1), Health::Up);
    check_acked(&shards, &balancer, &acked);
}

#[test]
fn a_killed_kv_shard_fails_only_its_own_keys_and_loses_no_acknowledged_write() {
    let mut shards = Shards::start("balancer-kill");
    let balancer = Balancer::builder()
        .health_interval(Duration::from_millis(100))
        .build(shards.names())
        .expect("build");
    let killed_name = shards.servers[1].addr.to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let threads = 4;
    let workers = load(&balancer, threads, 100_000, &stop, &acked, &done);
    wait_for(&done, 200);
    shards.servers[1].kill9();
    let killed_at = done.load(Ordering::Relaxed);
    wait_for(&done, killed_at + 300);
    shards.restart(1);
    // Back within a few health intervals; then its keys are served again.
    let until = Instant::now() + Duration::from_secs(10);
    while balancer.health(1) != Health::Up {
        assert!(Instant::now() < until, "shard 1 not readmitted");
        thread::sleep(Duration::from_millis(20));
    }
    let back = done.load(Ordering::Relaxed);
    wait_for(&done, back + 300);
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("load thread"))
        .collect();
    let mut in_flight = 0;
    let mut refused = 0;
    for (key, err) in &failures {
        assert_eq!(
            balancer.owner(key.as_bytes()),
            1,
            "{key} is not on the killed shard, yet failed: {err}"
        );
        match err {
            ClientError::Closed | ClientError::Io(_) => in_flight += 1,
            ClientError::Status(s) if s.code == Code::UNAVAILABLE => {
                assert!(s.message.contains(&killed_name), "{s}");
                refused += 1;
            }
            other => panic!("{key}: unexpected error {other:?}"),
        }
    }
    eprintln!(
        "SIGKILL of shard 1: {} failures, {in_flight} in flight (outcome unknown), {refused} refused unsent while it was out",
        failures.len()
    );
    assert!(in_flight <= threads, "{failures:?}");
    assert!(
        refused > 0,
        "requests for the killed shard's keys were refused while it was out"
    );
    // Every write acknowledged before, during and after is there (fsync always).
    check_acked(&shards, &balancer, &acked);
}

#[test]
fn a_goaway_to_an_idle_connection_retires_it_without_taking_the_server_out() {
    // A server that sends GOAWAY to a connection idle for 200 ms.
    let mut router = Router::new();
    router.register(WORK, |_: &courier_rpc::Context, body: Bytes| Ok(body));
    let server = support::start(
        Server::builder().idle_timeout(Duration::from_millis(200)),
        router,
    );
    let balancer = Balancer::builder()
        .health_interval(Duration::from_secs(3600))
        .build([server.local_addr().to_string()])
        .expect("build");
    let body = Bytes::from_static(b"before");
    assert_eq!(balancer.call(&WORK, &body).expect("call"), body);
    // The pooled connection idles past the timeout: GOAWAY, then closed by the server.
    thread::sleep(Duration::from_millis(600));
    let body = Bytes::from_static(b"after");
    assert_eq!(balancer.call(&WORK, &body).expect("call"), body);
    let stats = balancer.stats();
    assert_eq!(stats.servers[0].health, Health::Up, "{stats:?}");
    assert_eq!(stats.servers[0].ejections, 0, "{stats:?}");
    assert_eq!((stats.attempts, stats.retries), (2, 0), "{stats:?}");
}

#[test]
fn a_deadline_or_a_bad_answer_does_not_take_a_server_out() {
    let (server, _) = work_server(Duration::ZERO, false);
    let balancer = Balancer::builder()
        .health_interval(Duration::from_secs(3600))
        .build([server.local_addr().to_string()])
        .expect("build");
    // A deadline too short for any connect: the call times out, the server stays up.
    let options = CallOptions::default().with_deadline(Duration::from_nanos(1));
    match balancer.call_with(&WORK, &Bytes::new(), &options) {
        Err(ClientError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(balancer.health(0), Health::Up);
    // An answer that does not decode as the type asked for (3 bytes for a u64).
    const AS_NUMBER: Method<Bytes, u64> = Method::new(40, 1, "work.Do");
    match balancer.call(&AS_NUMBER, &Bytes::from_static(b"abc")) {
        Err(ClientError::Protocol(_)) => {}
        other => panic!("expected an answer that does not decode, got {other:?}"),
    }
    assert_eq!(balancer.health(0), Health::Up);
    let stats = balancer.stats();
    assert_eq!(stats.servers[0].ejections, 0, "{stats:?}");
    let body = Bytes::from_static(b"still fine");
    assert_eq!(balancer.call(&WORK, &body).expect("call"), body);
}
