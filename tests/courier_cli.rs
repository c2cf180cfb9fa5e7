//! courier-cli end to end, as a process: against the user_directory example serving
//! (`--serve`), a service it has no code for, whose methods take and answer CBOR; and against
//! a kv-server (`--in-memory`), whose methods take bytes, a custom layout and answer a bool.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;
use support::examples::example;
use support::process::Process;
use support::TempDir;

/// How long a server may take to print its address: generous, never hit on success.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A server process serving on 127.0.0.1 with a free port; killed when dropped.
struct Server {
    _process: Process,
    addr: SocketAddr,
}

impl Server {
    /// Starts `command` and reads the address at the end of its first line of stdout.
    fn start(command: Command) -> Server {
        let process = Process::spawn(command);
        let addr = process.announced(START_LIMIT);
        Server {
            _process: process,
            addr,
        }
    }

    /// The user_directory example, serving.
    fn directory() -> Server {
        let mut command = example("user_directory");
        command.args(["--serve", "127.0.0.1:0"]);
        Server::start(command)
    }

    /// A kv-server keeping its data in memory.
    fn kv() -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kv-server"));
        command
            .args(["--addr", "127.0.0.1:0", "--in-memory"])
            .env("RUST_LOG", "warn");
        Server::start(command)
    }

    /// `courier-cli --addr ADDR args...` with stdin closed, run to its end (its own
    /// timeouts bound it).
    fn cli(&self, args: &[&str]) -> Run {
        Run::of(
            cli_command(self.addr, args)
                .output()
                .expect("run courier-cli"),
        )
    }

    /// `courier-cli --addr ADDR args...` with `input` on stdin.
    fn cli_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = cli_command(self.addr, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start courier-cli");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        Run::of(child.wait_with_output().expect("run courier-cli"))
    }
}

fn cli_command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier-cli"));
    command
        .args(["--addr", &addr.to_string(), "--timeout", "20"])
        .args(args);
    command
}

/// A finished courier-cli run.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn of(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit 0; returns stdout.
    fn ok(&self) -> String {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self.stdout()
    }

    /// Asserts exit `code` and nothing on stdout; returns stderr.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "stdout: {}", self.stdout());
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout());
        &self.stderr
    }
}

/// The whitespace-separated columns of the line of `list` output for `name`.
fn listed<'a>(list: &'a str, name: &str) -> Vec<&'a str> {
    list.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[cfg(feature = "serde")]
#[test]
fn lists_and_calls_a_cbor_service_it_has_no_code_for() {
    let server = Server::directory();

    let list = server.cli(&["list"]).ok();
    assert_eq!(
        listed(&list, "directory.create"),
        ["directory.create", "110/1", "cbor", "->", "cbor"]
    );
    assert_eq!(
        listed(&list, "directory.count"),
        ["directory.count", "110/3", "empty", "->", "u64"]
    );
    assert_eq!(
        listed(&list, "admin.Methods"),
        ["admin.Methods", "0/4", "empty", "->", "utf8"]
    );
    let filtered = server.cli(&["ls", "DIRECTORY."]).ok();
    assert_eq!(filtered.lines().count(), 4, "{filtered}");
    assert!(filtered.lines().all(|l| l.starts_with("directory.")));
    let as_json = json(&server.cli(&["list", "--json", "directory.get"]).ok());
    assert_eq!(
        as_json,
        serde_json::json!([{"service": 110, "method": 2, "name": "directory.get",
            "request": "cbor", "response": "cbor"}])
    );
    let none = server.cli(&["list", "nothing"]);
    assert!(none.failed(2).contains("no method name starts with"));

    // JSON in, CBOR on the wire; the answer, CBOR, printed as JSON (compact: not a terminal).
    let ada = r#"{"name": "Ada", "email": "ada@example.org"}"#;
    assert_eq!(server.cli(&["call", "directory.create", ada]).ok(), "1\n");
    // One line (not a terminal), the fields in their declared order.
    let user = server.cli(&["call", "Directory.Get", "1"]).ok();
    assert_eq!(
        user,
        "{\"id\":1,\"name\":\"Ada\",\"email\":\"ada@example.org\"}\n"
    );
    assert_eq!(server.cli(&["call", "directory.count"]).ok(), "1\n");
    // --deadline and --metadata go with the request.
    let found = server.cli(&[
        "call",
        "directory.search",
        r#"{"name_contains": "d"}"#,
        "--deadline",
        "10000",
        "--metadata",
        "trace-id=4bf92f35",
        "--metadata",
        "tenant=a=b",
    ]);
    assert_eq!(json(&found.ok())[0]["name"], "Ada");

    // The server's statuses: exit 1, the code's name and the message on stderr.
    let again = server.cli(&["call", "directory.create", ada]);
    assert_eq!(again.failed(1), "ERROR ALREADY_EXISTS: Ada is taken\n");
    let missing = server.cli(&["call", "directory.get", "99"]);
    assert_eq!(missing.failed(1), "ERROR NOT_FOUND: no user 99\n");
    let wrong_type = server.cli(&["call", "directory.get", r#""one""#]);
    assert!(wrong_type.failed(1).starts_with("ERROR INVALID_ARGUMENT: "));

    // Bodies that do not parse are refused before anything is sent: exit 2.
    let bad_json = server.cli(&["call", "directory.create", r#"{"name": "Bob""#]);
    let err = bad_json.failed(2);
    assert!(
        err.starts_with("courier-cli: directory.create: bad request body: the request is cbor, typed as JSON, and the body is not JSON: "),
        "{err}"
    );
    let no_body = server.cli(&["call", "directory.create"]);
    assert!(no_body.failed(2).contains("give it as BODY"));
    let bad_metadata = server.cli(&["call", "directory.count", "--metadata", "a b=c"]);
    assert!(bad_metadata.failed(2).contains("--metadata"));
    assert_eq!(
        server.cli(&["call", "directory.count"]).ok(),
        "1\n",
        "nothing was created by the refused calls"
    );

    // A name the server does not serve points at `list`.
    let unknown = server.cli(&["call", "directory.delete", "1"]);
    let err = unknown.failed(2);
    assert!(
        err.contains("no method named \"directory.delete\""),
        "{err}"
    );
    assert!(err.contains("`courier-cli list`"), "{err}");

    // The same call by ids: reflection still gives the encodings.
    assert_eq!(server.cli(&["call", "110/3"]).ok(), "1\n");
    // CBOR typed as hex: 0x01, the user id 1.
    let by_hex = server.cli(&["call", "directory.get", "--hex", "01"]).ok();
    assert_eq!(json(&by_hex)["name"], "Ada");
    // The raw answer: the u64 1, 8 bytes big-endian.
    let raw = server.cli(&["call", "directory.count", "--raw"]);
    assert_eq!(raw.ok(), "\0\0\0\0\0\0\0\x01");
}

#[test]
fn calls_the_kv_and_echo_services_with_bytes() {
    let server = Server::kv();
    let list = server.cli(&["list", "kv"]).ok();
    assert_eq!(
        listed(&list, "kv.Set"),
        ["kv.Set", "2/2", "custom", "->", "empty"]
    );
    assert_eq!(
        listed(&list, "kv.Delete"),
        ["kv.Delete", "2/3", "bytes", "->", "bool"]
    );

    // SET's custom layout typed as hex: key length 3, "key", value "val". OK prints nothing.
    let set = server.cli(&["call", "kv.Set", "0003 6b6579 76616c"]);
    assert_eq!(set.ok(), "");
    assert_eq!(server.cli(&["call", "kv.Get", "6b6579"]).ok(), "76616c\n");
    let raw = server.cli(&["call", "KV.GET", "--raw-body", "key", "--output", "raw"]);
    assert_eq!(raw.ok(), "val");
    // By ids: 2/1 is kv.Get, and reflection says its answer is bytes.
    assert_eq!(server.cli(&["call", "2/1", "6b6579"]).ok(), "76616c\n");

    // From stdin ("-" or --stdin) and from a file: the bytes as they are.
    let mut payload = vec![0, 2];
    payload.extend_from_slice(b"k2\x00\xffbinary");
    assert_eq!(
        server
            .cli_with_stdin(&["call", "kv.Set", "-"], &payload)
            .ok(),
        ""
    );
    let got = server.cli(&["call", "kv.Get", "--raw-body", "k2", "--raw"]);
    got.ok();
    assert_eq!(got.stdout, b"\x00\xffbinary");
    let dir = TempDir::new("courier-cli");
    let file = dir.path().join("set.bin");
    std::fs::write(&file, b"\x00\x02k3three").expect("write the body file");
    let from_file = server.cli(&[
        "call",
        "kv.Set",
        "--file",
        file.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(from_file.ok(), "");
    let hex_stdin = server.cli_with_stdin(&["call", "kv.Get", "--stdin", "--hex"], b"6b33\n");
    assert_eq!(hex_stdin.ok(), "7468726565\n");

    // DELETE answers a bool.
    assert_eq!(server.cli(&["call", "kv.Delete", "6b6579"]).ok(), "true\n");
    assert_eq!(server.cli(&["call", "kv.Delete", "6b6579"]).ok(), "false\n");
    let gone = server.cli(&["call", "kv.Get", "6b6579"]);
    assert_eq!(gone.failed(1), "ERROR NOT_FOUND: key not found\n");

    // echo: hex in, hex out; by ids too.
    let echo = server.cli(&["call", "echo.Echo", "--hex", "68656c6c6f"]);
    assert_eq!(echo.ok(), "68656c6c6f\n");
    assert_eq!(server.cli(&["call", "1/1", "6869"]).ok(), "6869\n");
    assert_eq!(
        server
            .cli_with_stdin(&["call", "echo.Echo", "-"], b"hi\n")
            .ok(),
        "68690a\n"
    );
    let not_hex = server.cli(&["call", "echo.Echo", "hello"]);
    assert!(not_hex.failed(2).contains("--raw-body"));

    // A method nobody serves: by ids the server answers UNIMPLEMENTED; by name, `list`.
    let unimplemented = server.cli(&["call", "9/9"]);
    assert!(unimplemented.failed(1).starts_with("ERROR UNIMPLEMENTED: "));
    let unknown = server.cli(&["call", "kv.Nope"]);
    assert!(unknown.failed(2).contains("`courier-cli list`"));

    // The admin commands.
    assert_eq!(server.cli(&["whoami"]).ok(), "anonymous\n");
    assert!(server.cli(&["ping"]).ok().starts_with("PONG in "));
    let stats = server.cli(&["stats"]).ok();
    let value = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{stats}"))
    };
    assert_eq!(value("requests_NOT_FOUND"), 1, "the GET of a deleted key");
    assert_eq!(value("requests_UNIMPLEMENTED"), 1, "9/9");
}

#[test]
fn a_server_that_is_not_there_is_exit_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let run = Run::of(
        cli_command(port, &["list"])
            .output()
            .expect("run courier-cli"),
    );
    let err = run.failed(2);
    assert!(
        err.starts_with(&format!("courier-cli: cannot connect to {port}")),
        "{err}"
    );
}
