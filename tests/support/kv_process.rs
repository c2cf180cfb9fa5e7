//! A kv-server process for the durability tests: started on a data directory, its address
//! read from stdout, its stderr kept line by line, killed (SIGKILL) or drained (SIGTERM) on
//! demand; kv calls with one-line helpers; and the seeded randomness of the crash tests.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{self, Key, SetRequest};
use courier_rpc::proto::{Code, Status};

pub const KV_SERVER: &str = env!("CARGO_BIN_EXE_kv-server");
/// The log file in a data directory.
pub const LOG_FILE: &str = "kv.log";
/// A compaction's file in a data directory.
pub const COMPACT_FILE: &str = "kv.log.compact";
/// How long a server may take to start, or to die once killed: generous, never hit on
/// success.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);
/// `--drain-timeout` of every server started here, in seconds.
pub const DRAIN_TIMEOUT_SECS: u64 = 5;
/// Time a process may take to exit once its drain is over.
pub const EXIT_MARGIN: Duration = Duration::from_secs(2);
/// The read timeout of every client: a server that stops answering fails the test instead of
/// hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- randomness ----

/// The seed of one test: `COURIER_DURABILITY_SEED`, or the clock. Printed, so that a failure
/// can be replayed.
pub fn seed(test: &str) -> u64 {
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
pub fn cycles_from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// xorshift64, its state first mixed by splitmix64 (so that nearby seeds diverge at once).
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The generator of one part of a test (a cycle, a writer), from the test's seed.
    pub fn derive(seed: u64, parts: &[u64]) -> Rng {
        let mixed = parts.iter().fold(seed, |acc, &part| {
            Rng::new(acc ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15)).0
        });
        Rng::new(mixed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `lo..=hi` for a test.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// `true` with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---- a server process ----

/// A kv-server process listening on 127.0.0.1, its stderr collected line by line; killed
/// when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    pub exited: Option<ExitStatus>,
}

/// A server that exited before it listened: its status and what it wrote to stderr.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: Vec<String>,
}

impl Server {
    /// The command for a server on `dir` with `args`: a free port, one event loop (unless
    /// `args` sets `--loops`), logging at info, the drain timeout of these tests.
    pub fn command(dir: &Path, args: &[&str]) -> Command {
        Server::command_on("127.0.0.1:0", dir, args)
    }

    /// [`Server::command`] listening on `addr` (to restart a server on its port).
    pub fn command_on(addr: &str, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(KV_SERVER);
        command.args(["--addr", addr]);
        if !args.contains(&"--loops") {
            command.args(["--loops", "1"]);
        }
        command
            .arg("--drain-timeout")
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
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::launch(Server::command(dir, args)).unwrap_or_else(|exited| {
            panic!(
                "kv-server {args:?} exited with {} before listening:\n{}",
                exited.status,
                exited.stderr.join("\n")
            )
        })
    }

    /// Spawns `command` (from [`Server::command`], adjusted); panics unless it listens.
    pub fn launch_or_panic(command: Command) -> Server {
        Server::launch(command).unwrap_or_else(|exited| {
            panic!(
                "kv-server exited with {}:\n{}",
                exited.status,
                exited.stderr.join("\n")
            )
        })
    }

    /// Starts a server on `dir` that must exit before it listens.
    pub fn start_failing(dir: &Path, args: &[&str]) -> Exited {
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
    pub fn launch(mut command: Command) -> Result<Server, Exited> {
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
    pub fn client(&self) -> Client {
        Client::builder()
            .read_timeout(CLIENT_TIMEOUT)
            .connect(self.addr)
            .expect("connect to kv-server")
    }

    /// Every line the server wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        lock(&self.stderr)
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// The first stderr line containing `needle`, waiting up to `limit` for it.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> Option<String> {
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
    pub fn stderr_tail(&self) -> String {
        let lines = lock(&self.stderr);
        let from = lines.len().saturating_sub(40);
        lines[from..].join("\n")
    }

    /// SIGKILL (`Child::kill`), then reaps the process.
    pub fn kill9(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.child.kill().expect("SIGKILL kv-server");
        self.wait(PROCESS_TIMEOUT)
            .expect("kv-server exits once killed with SIGKILL");
    }

    /// Sends SIGTERM: the server drains and exits.
    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: `kill` takes a pid and a signal number and touches no memory of ours. The
        // pid is our child's, not yet reaped (this is only called before `wait` saw it exit),
        // so it cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
    }

    /// Waits up to `limit` for the process to exit; then waits (bounded) for the rest of its
    /// output, so that every stderr line it wrote is in [`Server::stderr_lines`].
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
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
    pub fn terminate_and_wait(&mut self) -> ExitStatus {
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
    pub fn stop_cleanly(&mut self) {
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

pub fn key(k: &str) -> Key {
    Key(Bytes::copy_from_slice(k.as_bytes()))
}

pub fn set(client: &mut Client, k: &str, v: &[u8]) -> Result<(), ClientError> {
    let request = SetRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v),
    };
    client.call(&kv::SET, &request)
}

/// GET: `Some(value)`, or `None` for NOT_FOUND; any other answer fails the test.
pub fn get(client: &mut Client, k: &str) -> Option<Bytes> {
    match client.call(&kv::GET, &key(k)) {
        Ok(value) => Some(value.0),
        Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => None,
        Err(err) => panic!("GET {k}: {err}"),
    }
}

/// The status of a call that must have been answered with one.
pub fn status_of<T: std::fmt::Debug>(what: &str, result: Result<T, ClientError>) -> Status {
    match result {
        Err(ClientError::Status(status)) => status,
        other => panic!("{what}: expected an error status, got {other:?}"),
    }
}

/// Asserts that a write was refused because the log failed.
pub fn assert_refused(what: &str, result: Result<impl std::fmt::Debug, ClientError>) {
    let status = status_of(what, result);
    assert_eq!(status.code, Code::UNAVAILABLE, "{what}: {status}");
    assert!(
        status.message.contains("writes are refused"),
        "{what}: the message says why: {status}"
    );
}

pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .len()
}

/// Copies the log of a failed run where it outlives the test's temporary directory.
pub fn keep_evidence(dir: &Path, tag: &str) -> PathBuf {
    let to = std::env::temp_dir().join(format!("courier-kv-durability-{tag}.log"));
    match fs::copy(dir.join(LOG_FILE), &to) {
        Ok(_) => to,
        Err(err) => PathBuf::from(format!("(log not kept: {err})")),
    }
}
