//! A child process for the tests that run a binary: its stdout read line by line on a thread
//! (so that every wait is bounded), its stderr kept for failure messages, SIGTERM or SIGKILL on
//! demand, and killed and reaped when dropped.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A running child process; killed and reaped when dropped unless it has exited.
pub struct Process {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr piped.
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let text = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                let mut text = text.lock().unwrap_or_else(|p| p.into_inner());
                text.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Process {
            child,
            stdout,
            stderr,
            exited: None,
        }
    }

    /// The next line of stdout, waiting at most `limit`; `None` past it or at its end.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.stdout.recv_timeout(limit).ok()
    }

    /// The last word of the next line of stdout, parsed: the address a server prints once it
    /// listens (`kv-server listening on 127.0.0.1:4242`). Panics, with the process's stderr,
    /// when no line comes within `limit` or its last word does not parse.
    pub fn announced<T: std::str::FromStr>(&self, limit: Duration) -> T {
        let line = self
            .next_line(limit)
            .unwrap_or_else(|| panic!("no line on stdout; stderr: {}", self.stderr()));
        line.trim()
            .rsplit(' ')
            .next()
            .and_then(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("nothing to parse at the end of {line:?}"))
    }

    /// The rest of stdout, once the process has exited (at most `limit` for its last lines).
    pub fn rest_of_stdout(&self, limit: Duration) -> Vec<String> {
        let until = Instant::now() + limit;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(until.saturating_duration_since(Instant::now())) {
            lines.push(line);
        }
        lines
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends SIGTERM, unless the process was seen to exit.
    pub fn terminate(&self) {
        if self.exited.is_some() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: `kill` takes a pid and a signal number and touches no memory of ours. The
        // pid is our child's, not yet reaped (`wait_within` reaps it and sets `exited`), so it cannot
        // have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
    }

    /// Sends SIGKILL and reaps the process (a crash, as its peers see it: the kernel closes
    /// its sockets); nothing if it was seen to exit. Returns its exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.child.kill().expect("kill(SIGKILL) a child");
            self.exited = Some(self.child.wait().expect("wait for a killed child"));
        }
        self.exited
    }

    /// Waits at most `limit` for the process to exit: its status, or `None` past the limit.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait on a child");
            if self.exited.is_none() {
                if start.elapsed() > limit {
                    return None;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        self.exited
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
