//! The examples (examples/*.rs) run as processes: each exits 0 and says what it showed, and
//! graceful_shutdown, drained by SIGTERM, answers the calls it had read before it exits.
//!
//! The examples are built here, once, with `cargo build --examples` into this test's own
//! target directory and profile, with its features: `cargo test` builds them only as tests
//! when they are (`testing`), and `cargo test --test examples` not at all. Cargo holds no
//! lock on the build directory while tests run, and the library is built already, so this
//! takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use courier_rpc::{Client, Method};

mod support;
use support::process::Process;

/// How long an example may take to finish or to say something: generous, never hit on
/// success.
const LIMIT: Duration = Duration::from_secs(60);

/// How long building the examples may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// The features this test was built with, for the examples' build (the same set, "default"
/// included, so that the library is not built again).
const FEATURES: &[(&str, bool)] = &[
    ("default", cfg!(feature = "default")),
    ("serde", cfg!(feature = "serde")),
    ("signal", cfg!(feature = "signal")),
    ("kv", cfg!(feature = "kv")),
    ("echo", cfg!(feature = "echo")),
    ("cli", cfg!(feature = "cli")),
];

/// The variables cargo sets for a test besides CARGO_PKG_*, which a build in a shell lacks.
const SET_FOR_TESTS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// target/<profile>: this test runs from its `deps` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .to_owned()
}

/// Builds every example once (the first call; the others wait for it); panics with cargo's
/// output when the build fails.
fn build_examples() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let profile_dir = profile_dir();
        let features: Vec<&str> = FEATURES
            .iter()
            .filter_map(|&(name, on)| on.then_some(name))
            .collect();
        let mut cargo = Command::new(env!("CARGO"));
        // Not the variables cargo sets for a test: build scripts that watch one (ring's
        // watches CARGO_MANIFEST_DIR) would run again, and everything after them rebuild.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_") || SET_FOR_TESTS.contains(&&*name) {
                cargo.env_remove(&*name);
            }
        }
        cargo
            .arg("build")
            .arg("--examples")
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target/<profile> has a parent"))
            .args(["--no-default-features", "--features", &features.join(",")]);
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(profile) => {
                cargo.args(["--profile", profile]);
            }
            None => return Err(format!("no profile in {}", profile_dir.display())),
        }
        let mut build = Process::spawn(cargo);
        match build.wait_within(BUILD_LIMIT) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{status}:\n{}", build.stderr())),
            None => Err(format!(
                "not done within {BUILD_LIMIT:?}:\n{}",
                build.stderr()
            )),
        }
    });
    if let Err(e) = built {
        panic!("cargo build --examples: {e}");
    }
}

/// The command running example `name`, built.
fn example(name: &str) -> Command {
    build_examples();
    let path = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "no example {}", path.display());
    Command::new(path)
}

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
