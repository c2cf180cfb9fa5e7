//! The examples (examples/*.rs) run as processes: each exits 0 and says what it showed, and
//! graceful_shutdown, drained by SIGTERM, answers the calls it had read before it exits.
//!
//! The examples are built once, with `cargo build --examples` into this test's own target
//! directory and profile, with its features (`support::examples`).

use std::time::Duration;

use courier_rpc::{Client, Method};

mod support;
use support::examples::example;
use support::process::Process;

/// How long an example may take to finish or to say something: generous, never hit on
/// success.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs example `name` to its end; asserts that it exits 0 and prints a line containing
/// each of `expected`.
fn run_example(name: &str, expected: &[&str]) {
    let mut process = Process::spawn(example(name));
    let status = process
        .wait_within(LIMIT)
        .unwrap_or_else(|| panic!("{name} still runs after {LIMIT:?}:\n{}", process.stderr()));
    let stdout = process.rest_of_stdout(Duration::from_secs(5)).join("\n");
    println!("{name}:\n{stdout}");
    assert!(
        status.success(),
        "{name} exited with {status}:\n{stdout}\n{}",
        process.stderr()
    );
    for line in expected {
        assert!(
            stdout.contains(line),
            "{name} did not print {line:?}:\n{stdout}"
        );
    }
}

#[cfg(feature = "serde")]
#[test]
fn calc() {
    run_example("calc", &["2 + 40 = 42", "refused: OUT_OF_RANGE"]);
}

#[cfg(feature = "serde")]
#[test]
fn user_directory() {
    run_example(
        "user_directory",
        &[
            "get 1: Ada <ada@example.org>",
            "get 99: NOT_FOUND",
            "create Ada again: ALREADY_EXISTS",
            "count: 2000",
            "search \"race\": [\"Grace\"]",
            "search with a 20 ms deadline: ",
        ],
    );
}

#[test]
fn pipelining() {
    run_example(
        "pipelining",
        &["100 pipelined calls, collected in reverse order: "],
    );
}

#[cfg(all(feature = "tokio", feature = "echo"))]
#[test]
fn async_echo() {
    run_example(
        "async_echo",
        &[
            "100 tasks, one connection: 100 echoed their own body, 0 another body, 0 failed",
            "ping: ",
        ],
    );
}

#[test]
fn testing() {
    run_example(
        "testing",
        &[
            "audit past its deadline: Err(DEADLINE_EXCEEDED)",
            "all checks passed",
        ],
    );
}

/// graceful_shutdown's one method: sleeps that many milliseconds, answers the number.
const SLEEP: Method<u32, u32> = Method::new(120, 1, "sleeper.sleep");

#[cfg(feature = "signal")]
#[test]
fn graceful_shutdown_answers_what_it_read() -> Result<(), Box<dyn std::error::Error>> {
    let mut command = example("graceful_shutdown");
    command.arg("127.0.0.1:0");
    let mut server = Process::spawn(command);
    let line = server
        .next_line(LIMIT)
        .unwrap_or_else(|| panic!("no listening line:\n{}", server.stderr()));
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"));

    let mut client = Client::builder()
        .read_timeout(Duration::from_secs(20))
        .connect(addr)?;
    let pending = (0..3)
        .map(|_| client.send(&SLEEP, &300))
        .collect::<Result<Vec<_>, _>>()?;
    client.flush()?;
    // A PING is answered in order after the requests before it on the connection: once its
    // PONG is in, the server has read all three, so the drain must answer them.
    client.ping()?;
    server.terminate();
    for pending in pending {
        assert_eq!(
            client.wait(pending)?,
            300,
            "a call read before SIGTERM is answered"
        );
    }

    let status = server.wait_within(LIMIT).unwrap_or_else(|| {
        panic!(
            "still running {LIMIT:?} after SIGTERM:\n{}",
            server.stderr()
        )
    });
    let rest = server.rest_of_stdout(Duration::from_secs(5));
    assert!(
        status.success(),
        "exited with {status}:\n{}",
        server.stderr()
    );
    assert_eq!(rest, ["drained"], "stderr:\n{}", server.stderr());
    Ok(())
}
