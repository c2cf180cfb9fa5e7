//! The servers' `--config FILE`, run as processes: the shipped `deploy/kv-server.toml` starts
//! kv-server and names every flag; a limit set in a file takes effect; the command line
//! overrides the file; unknown keys, bad values, a missing file and bad TOML exit 2 with a
//! message naming the key and the file.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::kv::{Key, SetRequest, Value, GET, SET};
use courier_rpc::proto::{Code, Frame};

mod support;
use support::process::Process;
use support::{raw_connect, read_until_close, TempDir};

const KV_SERVER: &str = env!("CARGO_BIN_EXE_kv-server");
const ECHO_SERVER: &str = env!("CARGO_BIN_EXE_echo-server");
/// The annotated example shipped with the crate.
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kv-server.toml");
/// How long a server may take to start or to exit: generous, never hit on success.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `text` to `name` in `dir`; returns its path.
fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).expect("write a config file");
    path
}

/// `exe args...`, started in `cwd` with RUST_LOG=info: the process, and the address from
/// the line it prints once listening.
fn start(exe: &str, args: &[&str], cwd: &Path) -> (Process, SocketAddr) {
    let mut command = Command::new(exe);
    command.args(args).current_dir(cwd).env("RUST_LOG", "info");
    let process = Process::spawn(command);
    let addr = process.announced(PROCESS_TIMEOUT);
    (process, addr)
}

/// Runs `exe args...`, which must exit 2 with a usage error (clap's, ending in a pointer to
/// --help); returns its stderr.
fn refused(exe: &str, args: &[&str]) -> String {
    let mut command = Command::new(exe);
    command.args(args);
    let mut process = Process::spawn(command);
    let status = process
        .wait_within(PROCESS_TIMEOUT)
        .unwrap_or_else(|| panic!("{args:?} did not exit; stderr: {}", process.stderr()));
    // The process has exited; its stderr's last lines may still be on their way to us.
    for _ in 0..500 {
        if process.stderr().contains("'--help'") {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let stderr = process.stderr();
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains("'--help'"), "{args:?}: {stderr}");
    stderr
}

/// A connection past the limit: exactly one ERROR frame, RESOURCE_EXHAUSTED, then the close.
fn assert_refused(addr: SocketAddr) {
    let frames = read_until_close(&mut raw_connect(addr));
    match &frames[..] {
        [Frame::Error { code, .. }] => assert_eq!(*code, Code::RESOURCE_EXHAUSTED, "{frames:?}"),
        other => panic!("expected one RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

/// A client the server has accepted: connected, and one echo answered.
fn served(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr).expect("connect");
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"hello"))
        .expect("an echo within the limit is answered");
    assert_eq!(&reply[..], b"hello");
    client
}

#[test]
fn the_sample_starts_kv_server_and_command_line_flags_override_it() {
    let dir = TempDir::new("config-sample");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    // Started in `dir`, so the sample's data-dir = "kv-data" would be `dir`/kv-data.
    let (process, addr) = start(
        KV_SERVER,
        &[
            "--config",
            SAMPLE,
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
        ],
        dir.path(),
    );
    let mut client = served(addr);
    let set = SetRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
    };
    client.call(&SET, &set).expect("SET");
    let got = client
        .call(&GET, &Key(Bytes::from_static(b"k")))
        .expect("GET");
    assert_eq!(got, Value(Bytes::from_static(b"v")));
    assert!(data.join("kv.log").is_file(), "the log is in --data-dir");
    assert!(
        !dir.path().join("kv-data").exists(),
        "the file's data-dir was used in spite of --data-dir"
    );
    let stderr = process.stderr();
    assert!(
        stderr.contains("overridden by the command line: addr, data-dir"),
        "{stderr}"
    );
}

#[test]
fn the_sample_holds_every_flag_of_kv_server() {
    let sample = fs::read_to_string(SAMPLE).expect("read the sample");
    let help = Command::new(KV_SERVER)
        .arg("--help")
        .output()
        .expect("kv-server --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let keys: Vec<&str> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .filter(|key| !["help", "version", "config"].contains(key))
        .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(
        keys.len() > 20,
        "too few flags in kv-server --help: {keys:?}"
    );
    for key in keys {
        let set = format!("\n{key} = ");
        let commented = format!("\n# {key} = ");
        assert!(
            sample.contains(&set) || sample.contains(&commented),
            "deploy/kv-server.toml has no line for {key}"
        );
    }
}

#[test]
fn a_limit_in_the_file_takes_effect() {
    let dir = TempDir::new("config-limit");
    let config = write(&dir, "echo.toml", "max-connections = 1\n");
    let config = config.to_str().expect("utf-8 path");
    let (_process, addr) = start(
        ECHO_SERVER,
        &["--config", config, "--addr", "127.0.0.1:0"],
        dir.path(),
    );
    let _first = served(addr);
    assert_refused(addr);
}

#[test]
fn a_flag_on_the_command_line_overrides_the_file() {
    let dir = TempDir::new("config-override");
    let config = write(&dir, "kv.toml", "max-connections = 1\nin-memory = true\n");
    let config = config.to_str().expect("utf-8 path");
    let (process, addr) = start(
        KV_SERVER,
        &[
            "--config",
            config,
            "--addr",
            "127.0.0.1:0",
            "--max-connections",
            "2",
        ],
        dir.path(),
    );
    let _first = served(addr);
    let _second = served(addr);
    assert_refused(addr);
    let stderr = process.stderr();
    assert!(
        stderr.contains(": in-memory; overridden by the command line: max-connections"),
        "{stderr}"
    );
}

#[test]
fn a_flag_on_the_command_line_replaces_a_file_setting_it_cannot_be_used_with() {
    let dir = TempDir::new("config-conflict");
    let data = dir.path().join("data");
    let config = write(&dir, "kv.toml", "in-memory = true\n");
    let (_process, _addr) = start(
        KV_SERVER,
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--addr",
            "127.0.0.1:0",
            "--fsync",
            "always",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    // --fsync won over the file's in-memory: the server keeps a log.
    assert!(
        data.join("kv.log").is_file(),
        "no log in {}",
        data.display()
    );
}

#[test]
fn an_unknown_key_exits_2_naming_it_the_file_and_the_closest_key() {
    let dir = TempDir::new("config-unknown");
    let config = write(&dir, "kv.toml", "max-conections = 1\n");
    let config = config.to_str().expect("utf-8 path");
    let stderr = refused(KV_SERVER, &["--config", config]);
    assert!(
        stderr.contains("unknown key \"max-conections\""),
        "{stderr}"
    );
    assert!(stderr.contains(config), "{stderr}");
    assert!(
        stderr.contains("did you mean \"max-connections\"?"),
        "{stderr}"
    );
    // Each server has its own keys: data-dir is kv-server's.
    let config = write(&dir, "echo.toml", "data-dir = \"d\"\n");
    let config = config.to_str().expect("utf-8 path");
    let stderr = refused(ECHO_SERVER, &["--config", config]);
    assert!(stderr.contains("unknown key \"data-dir\""), "{stderr}");
    assert!(stderr.contains(config), "{stderr}");
}

#[test]
fn a_bad_value_exits_2_naming_the_key_and_the_file() {
    let dir = TempDir::new("config-bad-value");
    for (n, (line, key, says)) in [
        (
            "max-connections = \"many\"",
            "max-connections",
            "invalid digit",
        ),
        ("max-connections = 1.5", "max-connections", "invalid digit"),
        ("in-memory = \"yes\"", "in-memory", "true or false expected"),
        ("in-memory = 1", "in-memory", "not an integer"),
        ("fsync = \"sometimes\"", "fsync", "sometimes"),
        (
            "frame-timeout = 0",
            "frame-timeout",
            "positive number of seconds",
        ),
        ("loops = 0", "loops", "at least 1"),
        ("addr = [\"127.0.0.1:1\"]", "addr", "one value expected"),
        ("workers = { n = 1 }", "workers", "not a table"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = write(&dir, &format!("{n}.toml"), &format!("{line}\n"));
        let config = config.to_str().expect("utf-8 path");
        let stderr = refused(KV_SERVER, &["--config", config, "--in-memory"]);
        assert!(
            stderr.contains(config) && stderr.contains(&format!("key \"{key}\"")),
            "{line}: {stderr}"
        );
        assert!(stderr.contains(says), "{line}: no {says:?} in {stderr}");
    }
}

#[test]
fn a_missing_file_or_bad_toml_exits_2_naming_the_file() {
    let dir = TempDir::new("config-missing");
    let missing = dir.path().join("nowhere.toml");
    let missing = missing.to_str().expect("utf-8 path");
    let stderr = refused(ECHO_SERVER, &["--config", missing]);
    assert!(
        stderr.contains(&format!("cannot read the config file {missing}")),
        "{stderr}"
    );
    assert!(stderr.contains("No such file"), "{stderr}");

    let config = write(&dir, "bad.toml", "max-connections = \n");
    let config = config.to_str().expect("utf-8 path");
    let stderr = refused(ECHO_SERVER, &["--config", config]);
    assert!(
        stderr.contains(&format!("the config file {config} is not valid TOML")),
        "{stderr}"
    );
    assert!(stderr.contains("line 1"), "{stderr}");
}
