//! kv-cli as a user runs it, over real processes: a kv-server (in memory, 127.0.0.1, a free
//! port) and the kv-cli binary, given arguments, stdin and pipes; its prompt in a terminal
//! through tmux (`tests/scripts/kv_cli_tmux.sh`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::kv_process::Server;

const KV_CLI: &str = env!("CARGO_BIN_EXE_kv-cli");
/// How long a kv-cli answer or exit may take: generous, never hit on success.
const LIMIT: Duration = Duration::from_secs(20);

/// A kv-server in memory at `addr` (`127.0.0.1:0`: a free port).
fn server_at(addr: &str) -> Server {
    let mut command = Command::new(support::kv_process::KV_SERVER);
    command
        .args(["--in-memory", "--loops", "1", "--drain-timeout", "5"])
        .args(["--addr", addr])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Server::launch_or_panic(command)
}

fn server() -> Server {
    server_at("127.0.0.1:0")
}

/// Runs kv-cli with `args` against `addr`, `stdin` as its whole standard input, and its
/// stdout and stderr piped (so neither is a terminal).
fn kv_cli(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(KV_CLI)
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kv-cli");
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    // A thread, so that a kv-cli that answers before reading all of stdin cannot block the
    // test; a kv-cli that does not read it at all makes the write fail, which is fine.
    let writer = thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    // kv-cli's own timeouts (--timeout, 5 s) bound every wait on the server.
    let output = child.wait_with_output().expect("wait for kv-cli");
    writer.join().expect("stdin writer");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {:?}\nstderr: {:?}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Every byte value, a space, and a trailing newline: what a shell would mangle.
fn binary_value() -> Vec<u8> {
    let mut value: Vec<u8> = (0..=255).collect();
    value.extend_from_slice(b" \r\n\n");
    value
}

#[test]
fn x_reads_the_value_from_stdin_byte_for_byte_and_a_pipe_gets_it_raw() {
    let server = server();
    let value = binary_value();
    let out = kv_cli(server.addr, &["-x", "set", "bin"], &value);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "OK\n");

    // Stdout is a pipe: the value's bytes exactly, then one newline.
    let out = kv_cli(server.addr, &["get", "bin"], b"");
    assert_exit(&out, 0);
    let mut expected = value.clone();
    expected.push(b'\n');
    assert_eq!(out.stdout, expected);

    // The library client reads the same bytes: nothing was stripped or added on the way in.
    let mut client = server.client();
    assert_eq!(
        support::kv_process::get(&mut client, "bin").as_deref(),
        Some(&value[..])
    );

    // An empty stdin is an empty value.
    assert_exit(&kv_cli(server.addr, &["-x", "set", "empty"], b""), 0);
    assert_eq!(kv_cli(server.addr, &["get", "empty"], b"").stdout, b"\n");
}

#[test]
fn no_raw_quotes_what_is_not_printable_and_raw_wins_when_last() {
    let server = server();
    assert_exit(
        &kv_cli(server.addr, &["-x", "set", "k"], b"\x00\xffa\"\n"),
        0,
    );
    assert_exit(
        &kv_cli(server.addr, &["-x", "set", "t"], "héllo".as_bytes()),
        0,
    );

    let out = kv_cli(server.addr, &["--no-raw", "get", "k"], b"");
    assert_eq!(text(&out.stdout), "\"\\x00\\xffa\\\"\\n\"\n");
    let out = kv_cli(server.addr, &["--no-raw", "get", "t"], b"");
    assert_eq!(
        text(&out.stdout),
        "héllo\n",
        "printable UTF-8 is shown as it is"
    );
    let out = kv_cli(server.addr, &["--no-raw", "--raw", "get", "k"], b"");
    assert_eq!(out.stdout, b"\x00\xffa\"\n\n");
}

#[test]
fn commands_from_stdin_run_one_per_line_and_the_first_failure_is_the_exit_code() {
    let server = server();
    let script = concat!(
        "set greeting \"hello world\"\n",
        "GET greeting\n",
        "\n",
        "Set \"a key\" \"x\\x00y\\tz\\\\\"\r\n",
        "get 'a key'\n",
        "get nothing-here\n",
        "del greeting\n",
        "del greeting\n",
        "incr greeting\n",
        "set \"unterminated\n",
        "ping\n",
    );
    let out = kv_cli(server.addr, &[], script.as_bytes());
    // The first line that did not exit 0 is the missing key's (1), not the errors after it.
    assert_exit(&out, 1);
    let stdout = out.stdout;
    let expected: &[u8] = b"OK\nhello world\nOK\nx\x00y\tz\\\n(nil)\ndeleted\n(nil)\nPONG in ";
    assert!(stdout.starts_with(expected), "stdout: {:?}", text(&stdout));
    assert_eq!(
        text(&out.stderr),
        "(error) line 9: unknown command 'incr' (try help)\n\
         (error) line 10: unbalanced quotes: no closing \"\n"
    );

    // Only errors: exit 2. Quit stops reading: the line after it is not run.
    let out = kv_cli(server.addr, &[], b"set k\nquit\nset after quit\n");
    assert_exit(&out, 2);
    assert!(out.stdout.is_empty(), "{:?}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        "(error) line 1: wrong number of arguments: set KEY VALUE\n"
    );
    let out = kv_cli(server.addr, &["get", "after"], b"");
    assert_exit(&out, 1);

    // All fine: exit 0.
    let out = kv_cli(server.addr, &[], b"set k v\nget k\n");
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "OK\nv\n");
}

#[test]
fn a_server_error_on_one_line_does_not_stop_the_next() {
    let server = server();
    // An empty key is refused by the server (INVALID_ARGUMENT).
    let out = kv_cli(server.addr, &[], b"set \"\" v\nset k v\nget k\n");
    assert_exit(&out, 2);
    assert_eq!(text(&out.stdout), "OK\nv\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("(error) line 1: ") && stderr.contains("INVALID_ARGUMENT"),
        "{stderr:?}"
    );
}

#[test]
fn latency_with_a_count_prints_the_figures_of_that_many_pings_and_exits_0() {
    let server = server();
    let before = support::stats(server.addr);
    let out = kv_cli(
        server.addr,
        &["--latency", "--count", "5", "--interval", "1"],
        b"",
    );
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().expect("a line");
    // "min: 0.05, max: 0.31, avg: 0.09 (5 samples)"
    let figures = last
        .strip_suffix(" (5 samples)")
        .unwrap_or_else(|| panic!("{stdout:?}"));
    let numbers: Vec<f64> = figures
        .split(", ")
        .zip(["min: ", "max: ", "avg: "])
        .map(|(part, name)| {
            part.strip_prefix(name)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {last:?}"))
        })
        .collect();
    let [min, max, avg] = numbers[..] else {
        panic!("three figures in {last:?}");
    };
    assert!(min <= avg && avg <= max && min >= 0.0, "{last:?}");
    // Five PING frames, and the second STATS request itself, arrived in between.
    let frames_in = |report: &courier_rpc::admin::StatsReport| {
        report
            .0
            .iter()
            .find(|(name, _)| name == "frames_in")
            .map(|(_, v)| *v)
            .expect("frames_in counter")
    };
    assert_eq!(
        frames_in(&support::stats(server.addr)) - frames_in(&before),
        6
    );
}

#[test]
fn latency_history_prints_a_line_per_period() {
    let server = server();
    let out = kv_cli(
        server.addr,
        &[
            "--latency-history",
            "--history-period",
            "0.001",
            "--interval",
            "2",
            "--count",
            "4",
        ],
        b"",
    );
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let samples: Vec<u64> = stdout
        .lines()
        .map(|line| {
            line.strip_suffix(" seconds range")
                .and_then(|l| l.split_once(" samples) -- "))
                .and_then(|(head, _)| head.rsplit_once(" (")?.1.parse().ok())
                .unwrap_or_else(|| panic!("{line:?}"))
        })
        .collect();
    // Each 2 ms wait outlasts the 1 ms period, so a period ends at the latest with the PING
    // after a wait: the first may hold two PINGs, every later one holds one.
    assert_eq!(samples.iter().sum::<u64>(), 4, "{stdout:?}");
    assert!(samples.len() >= 3, "{stdout:?}");
}

#[test]
fn exit_codes_1_for_a_missing_key_and_2_for_errors_are_kept() {
    let server = server();
    for args in [&["get", "nope"][..], &["del", "nope"]] {
        let out = kv_cli(server.addr, args, b"");
        assert_exit(&out, 1);
        assert!(out.stdout.is_empty());
        assert_eq!(text(&out.stderr), "kv-cli: key not found: nope\n");
    }
    // A key that is not printable is named quoted, as it would be typed.
    assert_eq!(
        text(&kv_cli(server.addr, &["get", "a\tb"], b"").stderr),
        "kv-cli: key not found: \"a\\tb\"\n"
    );
    for (args, says) in [
        (&["set", "k"][..], "set needs KEY and VALUE"),
        (&["-x", "set", "k", "v"], "with -x, set takes KEY only"),
        (&["-x", "get", "k"], "-x goes with set only"),
        (&["-x"], "-x needs a command"),
        (&["--latency", "ping"], "--latency takes no command"),
        (
            &["--count", "3", "ping"],
            "--interval and --count go with --latency",
        ),
        (&["set", "", "v"], "INVALID_ARGUMENT"),
    ] {
        let out = kv_cli(server.addr, args, b"v");
        assert_exit(&out, 2);
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(
            stderr.starts_with("kv-cli: ") && stderr.contains(says),
            "{args:?}: {stderr:?}"
        );
    }
    // Nothing listening: exit 2 in every mode.
    drop(server);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    for args in [&["ping"][..], &["--latency", "--count", "1"]] {
        let out = kv_cli(addr, args, b"");
        assert_exit(&out, 2);
        assert!(text(&out.stderr).contains("cannot connect to"), "{out:?}");
    }
    let out = kv_cli(addr, &[], b"ping\n");
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).starts_with("(error) line 1: cannot connect to"),
        "{out:?}"
    );
}

/// kv-cli reading commands from a pipe the test keeps open, its stdout read line by line
/// (every wait bounded); killed when dropped.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Piped {
    fn start(addr: SocketAddr) -> Piped {
        let mut child = Command::new(KV_CLI)
            .arg("--addr")
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kv-cli");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Piped {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// Types `line` and returns the first line of its answer.
    fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to kv-cli");
        stdin.flush().expect("flush");
        self.lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no answer to {line:?}"))
    }

    /// Closes stdin; the exit status and stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < LIMIT,
                "kv-cli did not exit at the end of stdin"
            );
            thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
        }
        (status, stderr)
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_session_reconnects_after_the_server_restarts_and_says_so() {
    let mut first = server();
    let addr = first.addr;
    let mut cli = Piped::start(addr);
    assert_eq!(cli.ask("set k before"), "OK");
    assert_eq!(cli.ask("get k"), "before");

    // A drain (GOAWAY, then close), and a new server, empty, on the same port.
    first.terminate_and_wait();
    let second = server_at(&addr.to_string());
    assert_eq!(cli.ask("get k"), "(nil)", "answered by the new server");
    assert_eq!(cli.ask("set k after"), "OK");
    assert_eq!(cli.ask("get k"), "after");

    // Killed outright this time (no GOAWAY), and started again.
    drop(second);
    let _third = server_at(&addr.to_string());
    assert_eq!(cli.ask("get k"), "(nil)");

    let (status, stderr) = cli.finish();
    assert_eq!(status.code(), Some(1), "the (nil)s; stderr: {stderr:?}");
    let reconnected: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&format!("kv-cli: reconnected to {addr} (")))
        .collect();
    assert_eq!(reconnected.len(), 2, "{stderr:?}");
    assert!(!stderr.contains("(error)"), "{stderr:?}");
}

#[test]
fn the_prompt_in_a_terminal_through_tmux() {
    if Command::new("tmux")
        .arg("-V")
        .output()
        .map_or(true, |out| !out.status.success())
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is not installed; .ci/run installs it"
        );
        eprintln!("SKIPPED the_prompt_in_a_terminal_through_tmux: tmux is not on PATH");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/kv_cli_tmux.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .arg(KV_CLI)
        .arg(support::kv_process::KV_SERVER);
    let mut process = support::process::Process::spawn(command);
    let status = process.wait_within(Duration::from_secs(120));
    if status.is_none() {
        // SIGTERM first: the script's trap stops its tmux server and kv-server.
        process.terminate();
        process.wait_within(Duration::from_secs(5));
    }
    let stdout = process.rest_of_stdout(Duration::from_secs(2)).join("\n");
    assert!(
        status.is_some_and(|s| s.success()),
        "{script}: {status:?}\n{stdout}\n{}",
        process.stderr()
    );
    assert!(stdout.ends_with("kv_cli_tmux: ok"), "{stdout}");
}

/// kv-cli with several `--addr`: shards. Each key is written to and read from the server
/// rendezvous hashing places it on, and only there; ping and stats ask every server; a key
/// whose server is down is refused, naming it, while the others' keys still work.
#[test]
fn several_addresses_are_shards() {
    use courier_rpc::client::balance::Rendezvous;
    use courier_rpc::kv::{Key, GET};

    let mut servers: Vec<Server> = (0..3).map(|_| server()).collect();
    let names: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let list = names.join(",");
    let shards = Rendezvous::new(names.clone());
    let run = |args: &[&str]| {
        let output = Command::new(KV_CLI)
            .args(["--addr", &list])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kv-cli");
        output
    };
    for i in 0..30 {
        let key = format!("user:{i}");
        assert_exit(&run(&["set", &key, &format!("v{i}")]), 0);
    }
    let mut per_server = [0usize; 3];
    let mut clients: Vec<_> = servers.iter().map(Server::client).collect();
    for i in 0..30 {
        let key = format!("user:{i}");
        let out = run(&["get", &key]);
        assert_exit(&out, 0);
        assert_eq!(text(&out.stdout), format!("v{i}\n"));
        let owner = shards.owner(key.as_bytes());
        per_server[owner] += 1;
        for (index, client) in clients.iter_mut().enumerate() {
            let found = client.call(&GET, &Key(bytes::Bytes::from(key.clone())));
            assert_eq!(found.is_ok(), index == owner, "{key} on server {index}");
        }
    }
    assert!(per_server.iter().all(|&n| n > 0), "{per_server:?}");

    let out = run(&["ping"]);
    assert_exit(&out, 0);
    let pings = text(&out.stdout);
    for name in &names {
        assert!(pings.contains(&format!("# {name}\nPONG in ")), "{pings}");
    }
    let out = run(&["stats"]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).matches("\nconnections_open ").count(), 3);

    // Server 1 goes away: its keys are refused with its name, the others' still work.
    let down = names[1].clone();
    servers[1].kill9();
    let (mut refused, mut served) = (0, 0);
    for i in 0..30 {
        let key = format!("user:{i}");
        let out = run(&["get", &key]);
        if shards.owner(key.as_bytes()) == 1 {
            assert_exit(&out, 2);
            assert!(text(&out.stderr).contains(&down), "{}", text(&out.stderr));
            refused += 1;
        } else {
            assert_exit(&out, 0);
            served += 1;
        }
    }
    assert_eq!((refused, served), (per_server[1], 30 - per_server[1]));
    let out = run(&["ping"]);
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains(&format!("# {down}\n(error) ")));
}
