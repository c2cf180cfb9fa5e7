//! Durability of kv-server's append-only log, end to end: real processes, real sockets, real
//! files. Servers are killed with SIGKILL at random points (also in the middle of
//! compactions), a file size limit makes the log's writes fail, the log is damaged on disk
//! between runs, and SIGTERM drains a server with requests in flight.
//!
//! The randomised tests print their seed; `COURIER_DURABILITY_SEED=<n>` replays the same
//! choices (the interleaving of threads and the kill instants are the machine's own).
//! `COURIER_CRASH_CYCLES` (default 50) and `COURIER_COMPACTION_CYCLES` (default 100) set the
//! number of kill cycles.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use courier::client::{Client, ClientError};
use courier::kv::record::{set_len, FILE_HEADER};
use courier::kv::{self, Deleted, Key, SetRequest};
use courier::proto::{Code, Status};
use support::TempDir;

const KV_SERVER: &str = env!("CARGO_BIN_EXE_kv-server");
/// The log file in a data directory.
const LOG_FILE: &str = "kv.log";
/// A compaction's file in a data directory.
const COMPACT_FILE: &str = "kv.log.compact";
/// How long a server may take to start, or to die once killed: generous, never hit on
/// success.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);
/// `--drain-timeout` of every server started here, in seconds.
const DRAIN_TIMEOUT_SECS: u64 = 5;
/// Time a process may take to exit once its drain is over.
const EXIT_MARGIN: Duration = Duration::from_secs(2);
/// The read timeout of every client: a server that stops answering fails the test instead of
/// hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the log's background thread looks for a due compaction (the first look is this
/// long after the log is opened).
const COMPACTION_TICK: Duration = Duration::from_millis(100);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- randomness ----

/// The seed of one test: `COURIER_DURABILITY_SEED`, or the clock. Printed, so that a failure
/// can be replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("COURIER_DURABILITY_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COURIER_DURABILITY_SEED={text:?} is not a u64")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    println!("{test}: seed {seed} (replay with COURIER_DURABILITY_SEED={seed})");
    seed
}

/// A number of cycles from the environment, or `default`.
fn cycles_from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// xorshift64, its state first mixed by splitmix64 (so that nearby seeds diverge at once).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The generator of one part of a test (a cycle, a writer), from the test's seed.
    fn derive(seed: u64, parts: &[u64]) -> Rng {
        let mixed = parts.iter().fold(seed, |acc, &part| {
            Rng::new(acc ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15)).0
        });
        Rng::new(mixed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// `true` with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---- a server process ----

/// A kv-server process listening on 127.0.0.1, its stderr collected line by line; killed
/// when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

/// A server that exited before it listened: its status and what it wrote to stderr.
#[derive(Debug)]
struct Exited {
    status: ExitStatus,
    stderr: Vec<String>,
}

impl Server {
    /// The command for a server on `dir` with `args`: a free port, one event loop, logging at
    /// info, the drain timeout of these tests.
    fn command(dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(KV_SERVER);
        command
            .args(["--addr", "127.0.0.1:0", "--loops", "1", "--drain-timeout"])
            .arg(DRAIN_TIMEOUT_SECS.to_string())
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts a server on `dir`; panics unless it listens.
    fn start(dir: &Path, args: &[&str]) -> Server {
        Server::launch(Server::command(dir, args)).unwrap_or_else(|exited| {
            panic!(
                "kv-server {args:?} exited with {} before listening:\n{}",
                exited.status,
                exited.stderr.join("\n")
            )
        })
    }

    /// Starts a server on `dir` that must exit before it listens.
    fn start_failing(dir: &Path, args: &[&str]) -> Exited {
        match Server::launch(Server::command(dir, args)) {
            Ok(server) => panic!(
                "kv-server {args:?} started and listens on {}, but it should have refused:\n{}",
                server.addr,
                server.stderr_tail()
            ),
            Err(exited) => exited,
        }
    }

    /// Spawns `command` (from [`Server::command`]) and reads the address from the first line
    /// of its stdout, "kv-server listening on ADDR"; `Err` when it exits without one.
    fn launch(mut command: Command) -> Result<Server, Exited> {
        let mut child = command.spawn().expect("start the kv-server binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("piped stderr");
        let lines = Arc::clone(&stderr);
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                match line {
                    Ok(line) => lock(&lines).push(line),
                    Err(_) => break,
                }
            }
        });
        let out_pipe = child.stdout.take().expect("piped stdout");
        let (first_line, first) = mpsc::channel();
        let stdout_reader = thread::spawn(move || {
            let mut reader = BufReader::new(out_pipe);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = first_line.send(line);
            // Read on to the end, so that the server never writes into a closed pipe.
            let mut rest = String::new();
            while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
                rest.clear();
            }
        });
        let line = match first.recv_timeout(PROCESS_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kv-server printed no line on stdout within {PROCESS_TIMEOUT:?}:\n{}",
                    lock(&stderr).join("\n")
                );
            }
        };
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            readers: vec![stderr_reader, stdout_reader],
            exited: None,
        };
        match line
            .trim()
            .strip_prefix("kv-server listening on ")
            .and_then(|addr| addr.parse().ok())
        {
            Some(addr) => {
                server.addr = addr;
                Ok(server)
            }
            None => {
                let status = server.wait(PROCESS_TIMEOUT).unwrap_or_else(|| {
                    panic!("kv-server printed {line:?} instead of its address and did not exit")
                });
                Err(Exited {
                    status,
                    stderr: server.stderr_lines(),
                })
            }
        }
    }

    /// A client of the server (its read timeout bounds every call).
    fn client(&self) -> Client {
        Client::builder()
            .read_timeout(CLIENT_TIMEOUT)
            .connect(self.addr)
            .expect("connect to kv-server")
    }

    /// Every line the server wrote to stderr so far.
    fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// How many lines so far contain `needle`.
    fn count_lines(&self, needle: &str) -> usize {
        lock(&self.stderr)
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// The first stderr line containing `needle`, waiting up to `limit` for it.
    fn wait_for_line(&self, needle: &str, limit: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = lock(&self.stderr).iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            if start.elapsed() > limit || self.exited.is_some() {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines of stderr, for failure messages.
    fn stderr_tail(&self) -> String {
        let lines = lock(&self.stderr);
        let from = lines.len().saturating_sub(40);
        lines[from..].join("\n")
    }

    /// SIGKILL (`Child::kill`), then reaps the process.
    fn kill9(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.child.kill().expect("SIGKILL kv-server");
        self.wait(PROCESS_TIMEOUT)
            .expect("kv-server exits once killed with SIGKILL");
    }

    /// Sends SIGTERM: the server drains and exits.
    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: `kill` takes a pid and a signal number and touches no memory of ours. The
        // pid is our child's, not yet reaped (this is only called before `wait` saw it exit),
        // so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
    }

    /// Waits up to `limit` for the process to exit; then waits (bounded) for the rest of its
    /// output, so that every stderr line it wrote is in [`Server::stderr_lines`].
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on kv-server") {
                break status;
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        self.exited = Some(status);
        // The pipes close when the process is gone; the readers then finish.
        let until = Instant::now() + Duration::from_secs(5);
        for reader in std::mem::take(&mut self.readers) {
            while !reader.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(2));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        Some(status)
    }

    /// SIGTERM, then the exit status, which must come within the drain timeout.
    fn terminate_and_wait(&mut self) -> ExitStatus {
        self.terminate();
        let start = Instant::now();
        let limit = Duration::from_secs(DRAIN_TIMEOUT_SECS) + EXIT_MARGIN;
        let status = self.wait(limit).unwrap_or_else(|| {
            panic!(
                "kv-server did not exit within {limit:?} of SIGTERM (drain timeout {DRAIN_TIMEOUT_SECS} s):\n{}",
                self.stderr_tail()
            )
        });
        println!(
            "  SIGTERM: exited with {status} after {} ms",
            start.elapsed().as_millis()
        );
        status
    }

    /// SIGTERM, and asserts a clean exit: status 0 and the log flushed and synced.
    fn stop_cleanly(&mut self) {
        let status = self.terminate_and_wait();
        assert_eq!(
            status.code(),
            Some(0),
            "a drained server exits 0:\n{}",
            self.stderr_tail()
        );
        assert!(
            self.count_lines("log flushed and synced") > 0,
            "the server says it flushed its log:\n{}",
            self.stderr_tail()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- kv calls ----

fn key(k: &str) -> Key {
    Key(Bytes::copy_from_slice(k.as_bytes()))
}

fn set(client: &mut Client, k: &str, v: &[u8]) -> Result<(), ClientError> {
    let request = SetRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v),
    };
    client.call(&kv::SET, &request)
}

/// GET: `Some(value)`, or `None` for NOT_FOUND; any other answer fails the test.
fn get(client: &mut Client, k: &str) -> Option<Bytes> {
    match client.call(&kv::GET, &key(k)) {
        Ok(value) => Some(value.0),
        Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => None,
        Err(err) => panic!("GET {k}: {err}"),
    }
}

/// The status of a call that must have been answered with one.
fn status_of<T: std::fmt::Debug>(what: &str, result: Result<T, ClientError>) -> Status {
    match result {
        Err(ClientError::Status(status)) => status,
        other => panic!("{what}: expected an error status, got {other:?}"),
    }
}

/// Asserts that a write was refused because the log failed.
fn assert_refused(what: &str, result: Result<impl std::fmt::Debug, ClientError>) {
    let status = status_of(what, result);
    assert_eq!(status.code, Code::UNAVAILABLE, "{what}: {status}");
    assert!(
        status.message.contains("writes are refused"),
        "{what}: the message says why: {status}"
    );
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .len()
}

/// Copies the log of a failed run where it outlives the test's temporary directory.
fn keep_evidence(dir: &Path, tag: &str) -> PathBuf {
    let to = std::env::temp_dir().join(format!("courier-kv-durability-{tag}.log"));
    match fs::copy(dir.join(LOG_FILE), &to) {
        Ok(_) => to,
        Err(err) => PathBuf::from(format!("(log not kept: {err})")),
    }
}

// ---- crash cycles: the model of acknowledged writes ----

/// What a key may be found holding after a crash: the state its last acknowledged write left
/// it in, then the state of a write that was in flight when the server was killed (which may
/// or may not have been applied). `None`: absent.
type Possible = Vec<Option<Bytes>>;

/// Every key ever written in a run, with what it may hold.
#[derive(Default)]
struct Model {
    keys: HashMap<String, Possible>,
}

/// When a cycle's SIGKILL comes.
#[derive(Clone, Copy, Debug)]
enum KillClock {
    /// At a random point of the range after the writers start.
    AfterWritersStart,
    /// At a random point of the range after the log's background thread first looked for a
    /// due compaction ([`COMPACTION_TICK`] after the log was opened, which is just before the
    /// server listens): in the middle of the compaction that look started, or after it.
    AfterFirstCompactionCheck,
}

/// One run of crash cycles on one data directory.
#[derive(Clone, Copy, Debug)]
struct CrashPlan {
    test: &'static str,
    args: &'static [&'static str],
    cycles: usize,
    writers: u64,
    keys_per_writer: u64,
    /// Values are at least this long (a unique prefix, padded).
    value_len: usize,
    /// Share of writes that are DELETEs, in percent.
    delete_percent: u64,
    /// The SIGKILL comes at a random point of one of these ranges (ms; cycle `i` uses range
    /// `i % len`) after `kill_clock`'s start, and never before the cycle's first acknowledged
    /// write.
    kill_after_ms: &'static [(u64, u64)],
    kill_clock: KillClock,
}

/// What a run saw.
#[derive(Debug, Default)]
struct Totals {
    cycles: usize,
    acked: u64,
    /// Writes whose answer was lost to a kill.
    in_doubt: u64,
    /// Of those, how many the restarted server had applied.
    in_doubt_applied: u64,
    compactions: usize,
    /// Starts that removed a compaction's file a kill left behind.
    unfinished_compactions: usize,
    torn_tails: usize,
    /// Compactions that failed (none may on a healthy disk).
    compaction_failures: usize,
    /// The first lines the servers logged at ERROR (none may: the disk is fine).
    errors: Vec<String>,
}

impl Totals {
    /// Asserts that no server logged an error: on a healthy disk a kill is the only failure.
    fn assert_no_errors(&self, test: &str) {
        assert!(
            self.errors.is_empty(),
            "{test}: the servers logged errors ({} compactions failed); the first:\n{}",
            self.compaction_failures,
            self.errors.join("\n")
        );
    }
}

/// How one writer thread ended.
struct WriterEnd {
    acked: u64,
    in_doubt: bool,
    error: String,
}

/// Writes until its first error: SETs (new keys and overwrites, each value unique) and
/// DELETEs in its own keys (`w<writer>-k<n>`), one at a time, each acknowledged write
/// recorded in `model`.
fn write_until_killed(
    plan: CrashPlan,
    mut client: Client,
    mut rng: Rng,
    model: &Mutex<Model>,
    acked_this_cycle: &AtomicU64,
    cycle: usize,
    writer: u64,
) -> WriterEnd {
    let mut acked = 0;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let name = format!("w{writer}-k{:03}", rng.range(0, plan.keys_per_writer - 1));
        let delete = rng.percent(plan.delete_percent);
        let (new_state, result) = if delete {
            let result = client.call(&kv::DELETE, &key(&name));
            if let Ok(Deleted(deleted)) = result {
                // Whether the key was there is known exactly: every earlier write to it was
                // this thread's, and the start of the cycle resolved any in doubt.
                let model = lock(model);
                let known = model.keys.get(&name).map_or(&[None][..], Vec::as_slice);
                assert_eq!(
                    known.len(),
                    1,
                    "{name}: the state is known outside the kill's window"
                );
                assert_eq!(
                    deleted,
                    known[0].is_some(),
                    "{}: cycle {cycle}: DELETE {name} answered {deleted}, but the model holds {:?}",
                    plan.test,
                    known[0]
                );
            }
            (None, result.map(|_| ()))
        } else {
            let mut value = format!("cycle-{cycle}-w{writer}-{seq}-").into_bytes();
            value.resize(plan.value_len.max(value.len()), b'.');
            let value = Bytes::from(value);
            let result = set(&mut client, &name, &value);
            (Some(value), result)
        };
        let mut model = lock(model);
        let possible = model.keys.entry(name).or_insert_with(|| vec![None]);
        match result {
            Ok(()) => {
                *possible = vec![new_state];
                acked += 1;
                acked_this_cycle.fetch_add(1, Ordering::SeqCst);
            }
            Err(err) => {
                if !possible.contains(&new_state) {
                    possible.push(new_state);
                }
                return WriterEnd {
                    acked,
                    in_doubt: true,
                    error: match err {
                        // The server answered: not a kill's doing.
                        ClientError::Status(status) => format!("answered {status}"),
                        other => other.to_string(),
                    },
                };
            }
        }
    }
}

/// Checks every key of `model` against the server: each holds one of its possible states.
/// Then each key's state is what was found (a write in doubt is settled).
fn verify(server: &Server, model: &Mutex<Model>, totals: &mut Totals, context: &str, dir: &Path) {
    let mut client = server.client();
    let snapshot: Vec<(String, Possible)> = lock(model)
        .keys
        .iter()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let mut wrong = Vec::new();
    let mut found_states = Vec::with_capacity(snapshot.len());
    for batch in snapshot.chunks(256) {
        let pending: Vec<_> = batch
            .iter()
            .map(|(k, _)| client.send(&kv::GET, &key(k)).expect("send a GET"))
            .collect();
        for ((k, possible), pending) in batch.iter().zip(pending) {
            let found = match client.wait(pending) {
                Ok(value) => Some(value.0),
                Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => None,
                Err(err) => panic!("{context}: GET {k} failed: {err}"),
            };
            if !possible.contains(&found) {
                wrong.push(format!(
                    "{k}: found {found:?}, expected one of {possible:?}"
                ));
            }
            if possible.len() > 1 {
                totals.in_doubt += 1;
                if possible.last() == Some(&found) {
                    totals.in_doubt_applied += 1;
                }
            }
            found_states.push((k.clone(), found));
        }
    }
    if !wrong.is_empty() {
        let kept = keep_evidence(dir, &context.replace([' ', '/', ':', ','], "-"));
        panic!(
            "{context}: {} of {} keys hold what no acknowledged write left there \
             (a lost acknowledged write or a resurrected key); the log is kept at {}:\n{}\n\
             server stderr:\n{}",
            wrong.len(),
            snapshot.len(),
            kept.display(),
            wrong.join("\n"),
            server.stderr_tail()
        );
    }
    let mut model = lock(model);
    for (k, found) in found_states {
        model.keys.insert(k, vec![found]);
    }
}

/// Runs `plan`: each cycle starts the server on the same directory, verifies every key, lets
/// writers write, and kills the server with SIGKILL.
fn run_crash_cycles(plan: CrashPlan) -> Totals {
    let started = Instant::now();
    let seed = seed(plan.test);
    let data = TempDir::new(plan.test);
    let dir = data.path();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut totals = Totals::default();
    for cycle in 0..plan.cycles {
        let context = format!("{} seed {seed} cycle {cycle}", plan.test);
        let mut rng = Rng::derive(seed, &[cycle as u64]);

        // A compaction's file a kill left behind is removed on start, before the server
        // listens; the next compaction cannot begin before the first look, 100 ms later.
        let compact_path = dir.join(COMPACT_FILE);
        let leftover = compact_path.exists();
        let spawned_at = SystemTime::now();
        let server_started = Instant::now();
        let mut server = Server::start(dir, plan.args);
        let listening = Instant::now();
        if let Ok(meta) = fs::metadata(&compact_path) {
            let modified = meta.modified().expect("mtime of kv.log.compact");
            assert!(
                modified > spawned_at,
                "{context}: a kv.log.compact from before the start is still there:\n{}",
                server.stderr_tail()
            );
        }
        if leftover {
            totals.unfinished_compactions += 1;
            assert!(
                server
                    .wait_for_line("removed an unfinished compaction", PROCESS_TIMEOUT)
                    .is_some(),
                "{context}: the start removes the unfinished compaction and says so:\n{}",
                server.stderr_tail()
            );
        }
        let replayed = server
            .wait_for_line("replayed ", PROCESS_TIMEOUT)
            .unwrap_or_else(|| panic!("{context}: no 'replayed' line:\n{}", server.stderr_tail()));
        if server.count_lines("torn tail at byte") > 0 {
            totals.torn_tails += 1;
        }

        verify(&server, &model, &mut totals, &context, dir);

        let acked_this_cycle = Arc::new(AtomicU64::new(0));
        let writers_started = Instant::now();
        let writers: Vec<_> = (0..plan.writers)
            .map(|writer| {
                let client = server.client();
                let rng = Rng::derive(seed, &[cycle as u64, writer + 1]);
                let model = Arc::clone(&model);
                let acked = Arc::clone(&acked_this_cycle);
                thread::spawn(move || {
                    write_until_killed(plan, client, rng, &model, &acked, cycle, writer)
                })
            })
            .collect();

        let (lo, hi) = plan.kill_after_ms[cycle % plan.kill_after_ms.len()];
        let delay = Duration::from_millis(rng.range(lo, hi));
        let kill_at = match plan.kill_clock {
            KillClock::AfterWritersStart => writers_started + delay,
            KillClock::AfterFirstCompactionCheck => listening + COMPACTION_TICK + delay,
        };
        loop {
            let now = Instant::now();
            if now >= kill_at && acked_this_cycle.load(Ordering::SeqCst) > 0 {
                break;
            }
            if now > writers_started + PROCESS_TIMEOUT {
                panic!(
                    "{context}: no write acknowledged within {PROCESS_TIMEOUT:?}:\n{}",
                    server.stderr_tail()
                );
            }
            thread::sleep(
                kill_at
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(2)),
            );
        }
        let lived = server_started.elapsed();
        server.kill9();

        let mut acked = 0;
        let mut in_doubt = 0;
        for writer in writers {
            let end = writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            assert!(
                !end.error.starts_with("answered"),
                "{context}: a write was {} (the disk is fine: only the kill may fail a write)",
                end.error
            );
            acked += end.acked;
            in_doubt += u64::from(end.in_doubt);
        }
        assert!(acked > 0, "{context}: no write acknowledged");
        let compactions = server.count_lines("compacted ");
        let errors: Vec<String> = server
            .stderr_lines()
            .into_iter()
            .filter(|line| line.contains(" ERROR "))
            .collect();
        let compaction_failures = errors
            .iter()
            .filter(|line| line.contains("compaction failed"))
            .count();
        totals.compaction_failures += compaction_failures;
        for line in errors {
            if totals.errors.len() < 5 {
                totals.errors.push(format!("cycle {cycle}: {line}"));
            }
        }
        totals.cycles += 1;
        totals.acked += acked;
        totals.compactions += compactions;
        println!(
            "{context}: acked {acked}, {in_doubt} in flight at the kill after {} ms, \
             {compactions} compaction(s) finished, {compaction_failures} failed; start: {}",
            lived.as_millis(),
            replayed.split("kv.log: ").last().unwrap_or(&replayed)
        );
    }

    // A last start: every acknowledged write of the last cycle is there too.
    let server = Server::start(dir, plan.args);
    let context = format!("{} seed {seed} final start", plan.test);
    verify(&server, &model, &mut totals, &context, dir);
    drop(server);

    println!(
        "{}: {} cycles, {} acknowledged writes, {} in doubt at a kill ({} of them applied), \
         {} compactions finished and {} failed, {} unfinished compactions removed on start, \
         {} torn tails truncated; {} keys; {:.1} s",
        plan.test,
        totals.cycles,
        totals.acked,
        totals.in_doubt,
        totals.in_doubt_applied,
        totals.compactions,
        totals.compaction_failures,
        totals.unfinished_compactions,
        totals.torn_tails,
        lock(&model).keys.len(),
        started.elapsed().as_secs_f64()
    );
    totals
}

/// The crash cycles of an fsync policy: two writers, SIGKILL at a random point 20 to 150 ms
/// into their writing.
fn crash_plan(test: &'static str, args: &'static [&'static str], cycles: usize) -> CrashPlan {
    CrashPlan {
        test,
        args,
        cycles,
        writers: 2,
        keys_per_writer: 150,
        value_len: 32,
        delete_percent: 20,
        kill_after_ms: &[(20, 150)],
        kill_clock: KillClock::AfterWritersStart,
    }
}

#[test]
fn crash_always_loses_no_acknowledged_write() {
    let cycles = cycles_from_env("COURIER_CRASH_CYCLES", 50);
    let totals = run_crash_cycles(crash_plan("crash_always", &["--fsync", "always"], cycles));
    assert_eq!(totals.cycles, cycles);
    assert!(totals.acked >= cycles as u64, "{totals:?}");
    totals.assert_no_errors("crash_always");
}

#[test]
fn crash_everysec_loses_no_acknowledged_write_on_a_process_crash() {
    // A write is acknowledged once it is in the file, synced or not; the kernel keeps the
    // page cache when the process dies, so a SIGKILL loses nothing acknowledged.
    let totals = run_crash_cycles(crash_plan("crash_everysec", &["--fsync", "everysec"], 10));
    assert_eq!(totals.cycles, 10);
    assert!(totals.acked >= 10, "{totals:?}");
    totals.assert_no_errors("crash_everysec");
}

#[test]
fn compaction_killed_at_random_points_never_loses_or_resurrects_a_key() {
    let cycles = cycles_from_env("COURIER_COMPACTION_CYCLES", 100);
    let totals = run_crash_cycles(CrashPlan {
        test: "crash_compaction",
        args: &[
            "--fsync",
            "always",
            "--compact-min-size",
            "4096",
            "--compact-ratio",
            "1.5",
        ],
        cycles,
        writers: 1,
        keys_per_writer: 50,
        value_len: 100,
        delete_percent: 25,
        // A compaction of this log takes a few ms (three fsyncs), so every other kill
        // comes within 15 ms of the look that starts one, to land inside it more often.
        kill_after_ms: &[(10, 80), (0, 15)],
        kill_clock: KillClock::AfterFirstCompactionCheck,
    });
    assert_eq!(totals.cycles, cycles);
    totals.assert_no_errors("crash_compaction");
    assert!(
        totals.compactions > 0,
        "no compaction finished between the kills, so none was tested: {totals:?}"
    );
}

// ---- storage errors ----

/// The file size limit of the full-disk test: 64 KiB.
const FSIZE_LIMIT: libc::rlim_t = 64 * 1024;

#[test]
fn a_full_disk_fails_writes_but_serves_reads() {
    let started = Instant::now();
    let data = TempDir::new("kv-full-disk");
    let dir = data.path();
    let mut command = Server::command(dir, &["--fsync", "always"]);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls, `setrlimit` and
    // `signal`, on values on its stack, and allocates nothing (`last_os_error` only reads
    // errno). With SIGXFSZ ignored, a write past the limit fails with EFBIG instead of
    // killing the server; both settings survive the exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FSIZE_LIMIT,
                rlim_max: FSIZE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Server::launch(command).unwrap_or_else(|exited| {
        panic!(
            "kv-server exited with {}:\n{}",
            exited.status,
            exited.stderr.join("\n")
        )
    });
    let mut client = server.client();
    let value_of = |i: usize| -> Vec<u8> {
        let mut value = format!("value of full-{i:05}: ").into_bytes();
        value.resize(1024, b'v');
        value
    };
    let name = |i: usize| format!("full-{i:05}");

    // Distinct keys with 1 KiB values until a SET fails: about 62 fit in 64 KiB.
    let mut acked = 0;
    let refused = loop {
        assert!(
            acked < 200,
            "200 KiB written under a 64 KiB file size limit"
        );
        match set(&mut client, &name(acked), &value_of(acked)) {
            Ok(()) => acked += 1,
            Err(err) => break err,
        }
    };
    let first_refused = acked;
    println!("full disk: {acked} SETs acknowledged, then: {refused}");
    assert!(acked > 0, "the first SET fits under the limit");
    assert_refused("the SET that hit the limit", Err::<(), _>(refused));
    assert!(
        server
            .wait_for_line("refusing writes from now on", PROCESS_TIMEOUT)
            .is_some_and(|line| line.contains("ERROR")),
        "the server logs the storage error:\n{}",
        server.stderr_tail()
    );

    // Every write after it is refused, without being applied.
    for i in first_refused + 1..first_refused + 4 {
        assert_refused("a SET after the failure", set(&mut client, &name(i), b"x"));
        assert_eq!(
            get(&mut client, &name(i)),
            None,
            "a refused SET is not applied"
        );
    }
    for i in [0, acked / 2, acked - 1] {
        assert_refused(
            "a DELETE after the failure",
            client.call(&kv::DELETE, &key(&name(i))),
        );
    }
    // Reads go on: every acknowledged key has its value (the deletes were not applied).
    for i in 0..acked {
        assert_eq!(
            get(&mut client, &name(i)).as_deref(),
            Some(&value_of(i)[..]),
            "{}: an acknowledged value is served after the failure",
            name(i)
        );
    }
    // The SET that failed was applied in memory before its commit failed; either answer is
    // allowed until the restart.
    let visible = get(&mut client, &name(first_refused)).is_some();
    println!("full disk: the refused SET is visible before the restart: {visible}");
    drop(client);

    // The drain ends with the log's close, which reports the failure: exit code 1.
    let status = server.terminate_and_wait();
    assert_eq!(
        status.code(),
        Some(1),
        "a server whose log failed exits 1 after its drain:\n{}",
        server.stderr_tail()
    );
    assert!(
        server.count_lines("could not be flushed") > 0,
        "the exit says why:\n{}",
        server.stderr_tail()
    );

    // Restart without the limit: the acknowledged writes are there, the refused one is not,
    // and the record the limit cut short was truncated.
    let log = dir.join(LOG_FILE);
    let len = file_len(&log);
    let record = set_len(name(0).len(), 1024) as u64;
    let boundary = FILE_HEADER.len() as u64 + acked as u64 * record;
    assert!(
        len >= boundary && len <= FSIZE_LIMIT,
        "the log holds the {acked} acknowledged records ({boundary} bytes) and at most the \
         limit: {len}"
    );
    let server = Server::start(dir, &["--fsync", "always"]);
    let torn = server.wait_for_line("torn tail at byte", Duration::from_millis(200));
    if len > boundary {
        let line = torn.unwrap_or_else(|| {
            panic!(
                "a {}-byte partial record follows the last acknowledged one, but no torn tail \
                 was reported:\n{}",
                len - boundary,
                server.stderr_tail()
            )
        });
        assert!(
            line.contains(&format!("torn tail at byte {boundary} ")),
            "the torn tail is the record after the last acknowledged one, at {boundary}: {line}"
        );
        println!(
            "full disk: the limit cut a record after {} of its {record} bytes; the start \
             truncated it: {line}",
            len - boundary
        );
    } else {
        assert!(torn.is_none(), "no torn tail: {torn:?}");
        println!("full disk: the limit fell on a record boundary; nothing to truncate");
    }
    assert!(
        server
            .wait_for_line(&format!("replayed {acked} records"), PROCESS_TIMEOUT)
            .is_some(),
        "every acknowledged record is replayed:\n{}",
        server.stderr_tail()
    );
    let mut client = server.client();
    for i in 0..acked {
        assert_eq!(
            get(&mut client, &name(i)).as_deref(),
            Some(&value_of(i)[..]),
            "{}: acknowledged before the failure, so kept",
            name(i)
        );
    }
    assert_eq!(
        get(&mut client, &name(first_refused)),
        None,
        "the refused SET was never acknowledged and is gone after the restart"
    );
    assert_eq!(
        file_len(&log),
        boundary,
        "the log was truncated to its valid part"
    );
    println!(
        "a_full_disk_fails_writes_but_serves_reads: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---- recovery ----

fn recovery_key(i: usize) -> String {
    format!("key-{i:03}")
}

fn recovery_value(i: usize) -> Vec<u8> {
    format!("value-{i:03}-recorded-in-the-log").into_bytes()
}

#[test]
fn recovery_from_the_command_line() {
    let started = Instant::now();
    let data = TempDir::new("kv-recovery");
    let dir = data.path();
    let log = dir.join(LOG_FILE);
    let keys = 100;
    let record = set_len(recovery_key(0).len(), recovery_value(0).len()) as u64;
    let offset_of = |i: usize| FILE_HEADER.len() as u64 + i as u64 * record;

    let mut server = Server::start(dir, &[]);
    let mut client = server.client();
    for i in 0..keys {
        set(&mut client, &recovery_key(i), &recovery_value(i)).expect("SET");
    }
    drop(client);
    server.stop_cleanly();
    let len = file_len(&log);
    assert_eq!(len, offset_of(keys), "{keys} SET records of {record} bytes");

    // (a) Five bytes of garbage after the last record: a torn tail, truncated on start.
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open the log to append");
        file.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x01])
            .expect("append garbage");
    }
    let mut server = Server::start(dir, &[]);
    let line = server
        .wait_for_line("torn tail at byte", PROCESS_TIMEOUT)
        .unwrap_or_else(|| panic!("no torn tail warning:\n{}", server.stderr_tail()));
    assert!(
        line.contains(&format!("torn tail at byte {len} ")) && line.contains("WARN"),
        "the warning names the old end of the log, {len}: {line}"
    );
    let mut client = server.client();
    for i in 0..keys {
        assert_eq!(
            get(&mut client, &recovery_key(i)).as_deref(),
            Some(&recovery_value(i)[..])
        );
    }
    drop(client);
    server.stop_cleanly();
    assert_eq!(file_len(&log), len, "the garbage was truncated");

    // (b) One byte flipped inside the value of record 50 of 100: damage before the tail.
    let damaged = 50;
    let at = offset_of(damaged) + record - 5;
    let mut bytes = fs::read(&log).expect("read the log");
    bytes[at as usize] ^= 0x20;
    fs::write(&log, &bytes).expect("write the damaged log");
    let exited = Server::start_failing(dir, &[]);
    let stderr = exited.stderr.join("\n");
    assert_eq!(
        exited.status.code(),
        Some(1),
        "refuses with exit 1:\n{stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains(&format!("record at byte {} ", offset_of(damaged))),
        "names the damaged record's offset, {}:\n{stderr}",
        offset_of(damaged)
    );
    assert!(stderr.contains("--repair"), "suggests --repair:\n{stderr}");
    assert_eq!(
        file_len(&log),
        len,
        "a refused start leaves the log as it was"
    );

    // (c) --repair keeps the records before the damaged one and moves the rest aside.
    let mut server = Server::start(dir, &["--repair"]);
    assert!(
        server
            .wait_for_line(&format!("replayed {damaged} records"), PROCESS_TIMEOUT)
            .is_some(),
        "{}",
        server.stderr_tail()
    );
    let mut client = server.client();
    for i in 0..keys {
        let want = (i < damaged).then(|| recovery_value(i));
        assert_eq!(
            get(&mut client, &recovery_key(i)).map(|v| v.to_vec()),
            want,
            "{}: kept if before the damaged record, else moved aside",
            recovery_key(i)
        );
    }
    drop(client);
    assert_eq!(
        file_len(&log),
        offset_of(damaged),
        "the log is cut at the damage"
    );
    let aside: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list the data directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("kv.log.damaged-{}-", offset_of(damaged))))
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "one kv.log.damaged-<offset>-<time> file: {aside:?}"
    );
    assert_eq!(
        file_len(&aside[0]),
        len - offset_of(damaged),
        "it holds what followed the damage"
    );
    server.stop_cleanly();
    println!(
        "recovery_from_the_command_line: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---- graceful drain ----

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let started = Instant::now();
    let data = TempDir::new("kv-drain");
    let dir = data.path();
    let mut server = Server::start(dir, &["--fsync", "always"]);
    // No round trip first: the connection may still be in the listen backlog when the drain
    // begins, and must be drained (GOAWAY) like an accepted one, not reset.
    let mut client = server.client();
    let requests = 200;
    let pending: Vec<_> = (0..requests)
        .map(|i| {
            let request = SetRequest {
                key: Bytes::from(format!("drain-{i:03}")),
                value: Bytes::from(format!("value-{i:03}")),
            };
            client.send(&kv::SET, &request).expect("queue a SET")
        })
        .collect();
    client.flush().expect("write the SETs");
    server.terminate();
    let terminated = Instant::now();

    let mut succeeded = Vec::new();
    let mut refused = 0;
    for (i, pending) in pending.into_iter().enumerate() {
        let id = pending.request_id();
        match client.wait(pending) {
            Ok(()) => succeeded.push(i),
            Err(ClientError::Status(status)) if status.code == Code::UNAVAILABLE => refused += 1,
            Err(err) => panic!(
                "SET {i} (request {id}): only UNAVAILABLE (above the GOAWAY's last id) may \
                 fail a request during a drain, got: {err}\n{}",
                server.stderr_tail()
            ),
        }
    }
    // Ids are sent in order, so the answered ones are a prefix.
    assert_eq!(
        succeeded,
        (0..succeeded.len()).collect::<Vec<_>>(),
        "the requests answered are those up to the GOAWAY's last id"
    );
    println!(
        "drain: {} of {requests} SETs answered OK, {refused} refused after the GOAWAY",
        succeeded.len()
    );
    drop(client);
    let limit = Duration::from_secs(DRAIN_TIMEOUT_SECS) + EXIT_MARGIN;
    let status = server
        .wait(limit.saturating_sub(terminated.elapsed()))
        .unwrap_or_else(|| {
            panic!(
                "no exit within the drain timeout of {DRAIN_TIMEOUT_SECS} s:\n{}",
                server.stderr_tail()
            )
        });
    println!(
        "drain: exited with {status}, {} ms after SIGTERM",
        terminated.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(0), "{}", server.stderr_tail());
    assert!(
        server.count_lines("log flushed and synced") > 0,
        "{}",
        server.stderr_tail()
    );

    let server = Server::start(dir, &["--fsync", "always"]);
    let mut client = server.client();
    for i in 0..requests {
        let found = get(&mut client, &format!("drain-{i:03}"));
        if i < succeeded.len() {
            assert_eq!(
                found.as_deref(),
                Some(format!("value-{i:03}").as_bytes()),
                "SET {i} was acknowledged: it survives the drain and the restart"
            );
        } else {
            assert_eq!(
                found, None,
                "SET {i} was above the GOAWAY's last id, so it was not processed"
            );
        }
    }
    println!(
        "sigterm_drains_in_flight_requests_and_exits_zero: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
