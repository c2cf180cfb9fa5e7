//! HAProxy running the shipped `deploy/haproxy.cfg` in front of courier servers: finding the
//! binary, reading the file's check frames and check timing, starting it on free ports with
//! the file's environment variables, and reading `show stat` on its admin socket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::process::Process;
use super::TempDir;

/// The shipped configuration file, run as is.
pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");

/// The configuration file's text.
pub fn config_text() -> String {
    std::fs::read_to_string(CONFIG).unwrap_or_else(|e| panic!("read {CONFIG}: {e}"))
}

/// The haproxy executable: on `PATH`, else in the sbin directories (not on every user's
/// `PATH`); `None` when there is none.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// The haproxy executable, or `None` after saying why the test is skipped: only when haproxy
/// is not installed and `CI` is not set. Under `CI` a missing haproxy fails the test (`.ci/run`
/// installs it).
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(binary) = find_binary() {
        return Some(binary);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: haproxy is not installed (looked on PATH and in /usr/sbin), and CI is set"
    );
    eprintln!("{test}: SKIPPED: haproxy is not installed (apt-get install haproxy)");
    None
}

/// The bytes of the hex string that follows `prefix` on one of the file's lines.
fn hex_after(text: &str, prefix: &str) -> Vec<u8> {
    let mut found = text
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix(prefix));
    let hex = found
        .next()
        .unwrap_or_else(|| panic!("no line `{prefix} <hex>` in {CONFIG}"))
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("`{prefix}` without its hex string in {CONFIG}"));
    assert!(
        found.next().is_none(),
        "more than one `{prefix}` in {CONFIG}"
    );
    assert!(hex.len() % 2 == 0, "odd number of hex digits: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The check's two frames as the file spells them: what `tcp-check send-binary` sends and
/// what `tcp-check expect binary` looks for.
pub fn check_frames(text: &str) -> (Vec<u8>, Vec<u8>) {
    (
        hex_after(text, "tcp-check send-binary "),
        hex_after(text, "tcp-check expect binary "),
    )
}

/// The check's timing from the file's `default-server` line.
#[derive(Clone, Copy, Debug)]
pub struct CheckTiming {
    /// Time between two checks (`inter`).
    pub inter: Duration,
    /// Failed checks in a row that mark a server DOWN (`fall`).
    pub fall: u32,
    /// Good checks in a row that mark a server UP (`rise`).
    pub rise: u32,
}

/// An HAProxy time: a number with an optional unit (`us`, `ms`, `s`, `m`; milliseconds by
/// default).
fn haproxy_time(value: &str) -> Duration {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a time: {value}"));
    match &value[digits.len()..] {
        "us" => Duration::from_micros(n),
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        unit => panic!("unexpected time unit {unit:?} in {value}"),
    }
}

/// Reads `inter`, `fall` and `rise` from the `default-server` line of `text`.
pub fn check_timing(text: &str) -> CheckTiming {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("default-server "))
        .unwrap_or_else(|| panic!("no default-server line in {CONFIG}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        let at = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no `{key}` on {line:?}"));
        *words
            .get(at + 1)
            .unwrap_or_else(|| panic!("`{key}` without a value"))
    };
    CheckTiming {
        inter: haproxy_time(after("inter")),
        fall: after("fall").parse().expect("fall is a number"),
        rise: after("rise").parse().expect("rise is a number"),
    }
}

/// A port free on 127.0.0.1 right now (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One server's line of `show stat`.
#[derive(Clone, Debug)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (going up), `MAINT`, ...
    pub status: String,
    /// The last check's result: `L7OK` (the PONG matched), `L4CON` (connect refused), ...
    pub check_status: String,
    /// Connections to the server now.
    pub current: u64,
    /// Connections to the server since haproxy started.
    pub total: u64,
    /// Connects to the server that failed and were tried again (`wretr`).
    pub retries: u64,
    /// Connections moved from this server to another after a failed connect (`wredis`).
    pub redispatches: u64,
}

/// A haproxy process running [`CONFIG`] on a free port of 127.0.0.1, in front of three
/// servers; killed when dropped.
pub struct Haproxy {
    process: Process,
    /// Where clients connect.
    pub addr: SocketAddr,
    socket: PathBuf,
    _dir: TempDir,
}

/// The names the file gives the servers, in the order of [`Haproxy::start`]'s addresses.
pub const SERVERS: [&str; 3] = ["s1", "s2", "s3"];

impl Haproxy {
    /// Starts `binary -db -f CONFIG` with the file's variables pointing at a free port, an
    /// admin socket in a new temporary directory and `servers`; returns once the socket
    /// answers and the port accepts (at most 10 s).
    pub fn start(binary: &Path, servers: [SocketAddr; 3]) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let socket = dir.path().join("admin.sock");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(binary);
        command
            .args(["-db", "-f", CONFIG])
            .env("COURIER_LB_BIND", addr.to_string())
            .env("COURIER_LB_STATS_SOCKET", &socket)
            .env("COURIER_SERVER_1", servers[0].to_string())
            .env("COURIER_SERVER_2", servers[1].to_string())
            .env("COURIER_SERVER_3", servers[2].to_string());
        let mut haproxy = Haproxy {
            process: Process::spawn(command),
            addr,
            socket,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = haproxy.process.wait_within(Duration::ZERO) {
                panic!("haproxy exited ({status}): {}", haproxy.process.stderr());
            }
            if UnixStream::connect(&haproxy.socket).is_ok() && TcpStream::connect(addr).is_ok() {
                return haproxy;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "haproxy not listening on {addr} within 10 s: {}",
                haproxy.process.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What haproxy wrote to stderr (its log: servers going DOWN and UP).
    pub fn log(&self) -> String {
        self.process.stderr()
    }

    /// `show stat` on the admin socket: each server of backend `courier` by name.
    pub fn show_stat(&self) -> HashMap<String, ServerStat> {
        let mut stream = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.socket.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream.write_all(b"show stat\n").expect("send show stat");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read show stat");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("no header in show stat: {text:?}"))
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no column {name} in show stat"))
        };
        let (px, sv, status, check) = (
            column("pxname"),
            column("svname"),
            column("status"),
            column("check_status"),
        );
        let (scur, stot, wretr, wredis) = (
            column("scur"),
            column("stot"),
            column("wretr"),
            column("wredis"),
        );
        let mut servers = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.get(px) != Some(&"courier") || !SERVERS.contains(&fields[sv]) {
                continue;
            }
            let number = |i: usize| fields[i].parse().unwrap_or(0);
            servers.insert(
                fields[sv].to_string(),
                ServerStat {
                    status: fields[status].to_string(),
                    check_status: fields[check].to_string(),
                    current: number(scur),
                    total: number(stot),
                    retries: number(wretr),
                    redispatches: number(wredis),
                },
            );
        }
        servers
    }

    /// Polls `show stat` every 20 ms until server `name`'s status is exactly `status`, for at
    /// most `limit`: how long that took, or `None` past the limit.
    pub fn wait_for_status(&self, name: &str, status: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self
                .show_stat()
                .get(name)
                .is_some_and(|s| s.status == status)
            {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) until every server is UP with a check that passed on layer 7
    /// (its PONG matched); panics with `show stat` and the log otherwise.
    pub fn wait_all_up(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let stat = self.show_stat();
            let up = SERVERS.iter().all(|name| {
                stat.get(*name)
                    .is_some_and(|s| s.status == "UP" && s.check_status == "L7OK")
            });
            if up {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "servers not all UP with L7OK within {limit:?}: {stat:?}; log: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
