//! courier-bench over several kv servers (`--addr A,B,C`): each key goes to the server that
//! `Rendezvous` names for it (`proto-spec/SERVICES.md` Section 2.7) and to no other, echoes
//! go round, and the report counts each server's requests. Then what happens when a fourth
//! server is added: which keys move, and where. Real kv-server processes on 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use courier_rpc::client::balance::Rendezvous;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{Key, SetRequest, DELETE, GET, INFO, SET};
use courier_rpc::proto::Code;
use serde_json::Value;
use support::kv_process::Server;

/// Requests kept outstanding by the checks' own clients.
const WINDOW: usize = 512;

/// `count` kv-server processes, in memory, each with a data directory of its own under `dir`.
fn start_servers(dir: &Path, count: usize) -> Vec<Server> {
    (0..count)
        .map(|i| {
            let data = dir.join(format!("server-{i}"));
            std::fs::create_dir_all(&data).expect("data dir");
            Server::start(&data, &["--in-memory"])
        })
        .collect()
}

/// The servers' names: their addresses as courier-bench is given them.
fn names(servers: &[Server]) -> Vec<String> {
    servers.iter().map(|s| s.addr.to_string()).collect()
}

/// courier-bench with `--addr` the comma-separated `names`, `args` and `--json`: its exit
/// code, stdout and stderr.
fn bench_status(names: &[String], args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .arg("--addr")
        .arg(names.join(","))
        .args(args)
        .arg("--json")
        .output()
        .expect("run courier-bench");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A run that must succeed: its parsed report.
fn bench(names: &[String], args: &[&str]) -> Value {
    let (code, stdout, stderr) = bench_status(names, args);
    assert_eq!(code, Some(0), "courier-bench failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON {stdout:?}: {e}"))
}

/// The report's `servers`: each server's name and request count, checked to be `names` in
/// order and to add up to `requests`.
fn per_server(report: &Value, names: &[String]) -> Vec<u64> {
    let servers = report["servers"].as_array().expect("servers in the report");
    let listed: Vec<&str> = servers
        .iter()
        .map(|s| s["addr"].as_str().expect("addr"))
        .collect();
    assert_eq!(listed, names, "{report}");
    let counts: Vec<u64> = servers
        .iter()
        .map(|s| s["requests"].as_u64().expect("requests"))
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        report["requests"].as_u64().expect("requests"),
        "{report}"
    );
    counts
}

/// courier-bench's key `n`.
fn key(n: u64) -> Bytes {
    Bytes::from(format!("key:{n:010}"))
}

/// kv.Info's key count of the server at `addr`.
fn key_count(addr: SocketAddr) -> u64 {
    let mut client = Client::connect(addr).expect("connect");
    client.call(&INFO, &()).expect("kv.Info").keys
}

/// Which of `servers` hold each of `keys` (pipelined GETs to every server): for each key, the
/// indices of the servers that have it, and its value on the first.
fn holders(servers: &[SocketAddr], keys: &[Bytes]) -> Vec<(Vec<usize>, Option<Bytes>)> {
    let mut found: Vec<(Vec<usize>, Option<Bytes>)> = vec![(Vec::new(), None); keys.len()];
    for (s, addr) in servers.iter().enumerate() {
        let mut client = Client::connect(*addr).expect("connect");
        for (chunk_index, chunk) in keys.chunks(WINDOW).enumerate() {
            let pending: Vec<_> = chunk
                .iter()
                .map(|k| client.send(&GET, &Key(k.clone())).expect("send GET"))
                .collect();
            for (i, p) in pending.into_iter().enumerate() {
                let entry = &mut found[chunk_index * WINDOW + i];
                match client.wait(p) {
                    Ok(value) => {
                        entry.0.push(s);
                        entry.1.get_or_insert(value.0);
                    }
                    Err(ClientError::Status(status)) if status.code == Code::NOT_FOUND => {}
                    Err(err) => panic!("GET on {addr}: {err}"),
                }
            }
        }
    }
    found
}

#[test]
fn a_set_run_over_three_servers_puts_every_key_on_its_owner_only() {
    let dir = support::TempDir::new("bench-shards-set");
    let servers = start_servers(dir.path(), 3);
    let names = names(&servers);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    const KEYSPACE: u64 = 600;
    let report = bench(
        &names,
        &[
            "--workload",
            "set",
            "--requests",
            "4000",
            "--keyspace",
            &KEYSPACE.to_string(),
            "--clients",
            "4",
            "--threads",
            "2",
            "--pipeline",
            "8",
        ],
    );
    assert_eq!(report["requests"], 4000, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
    let counts = per_server(&report, &names);
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");

    // Each server answered what the report says it did, and kv.Info (the preflight) once.
    for (s, addr) in addrs.iter().enumerate() {
        let stats = support::stats(*addr);
        assert_eq!(
            stats.value("requests_OK"),
            counts[s] + 1,
            "{}: the server's count against the report's",
            names[s]
        );
    }

    let shards = Rendezvous::new(names.iter().cloned());
    let keys: Vec<Bytes> = (0..KEYSPACE).map(key).collect();
    let mut held = [0u64; 3];
    for (k, (on, _)) in keys.iter().zip(holders(&addrs, &keys)) {
        match on[..] {
            [] => {} // never drawn
            [s] => {
                let owner = shards.owner(k);
                assert_eq!(
                    s, owner,
                    "{k:?} is on {}, but {} owns it",
                    names[s], names[owner]
                );
                held[s] += 1;
            }
            _ => panic!("{k:?} is on several servers: {on:?}"),
        }
    }
    // Every key a server holds is one of those checked: its owner's.
    for (s, addr) in addrs.iter().enumerate() {
        assert_eq!(key_count(*addr), held[s], "{}", names[s]);
    }
    // 4000 draws from 600 keys miss about one key.
    assert!(held.iter().sum::<u64>() > KEYSPACE - 10, "{held:?}");
}

#[test]
fn echoes_go_round_the_servers_and_bad_address_lists_are_refused() {
    let servers: Vec<_> = (0..3).map(|_| support::start_default()).collect();
    let names: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let report = bench(
        &names,
        &[
            "--workload",
            "echo",
            "--requests",
            "300",
            "--clients",
            "3",
            "--pipeline",
            "4",
            "--window",
        ],
    );
    assert_eq!(report["requests"], 300, "{report}");
    let counts = per_server(&report, &names);
    // Each client sends its echoes to the servers in turn: within one per client of a third.
    for (s, count) in counts.iter().enumerate() {
        assert!((97..=103).contains(count), "{}: {counts:?}", names[s]);
        assert_eq!(support::counter(&servers[s], "requests_OK"), *count);
    }

    // --addr given again adds a server; one address alone gives the report of old.
    let output = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(["--addr", &names[0], "--addr", &names[1]])
        .args([
            "--workload",
            "echo",
            "--requests",
            "20",
            "--clients",
            "1",
            "--json",
        ])
        .output()
        .expect("run courier-bench");
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    per_server(&report, &names[..2]);
    let single = bench(&names[..1], &["--workload", "echo", "--requests", "20"]);
    assert!(single.get("servers").is_none(), "{single}");

    let refused = |list: &[String], extra: &[&str]| {
        let (code, _, stderr) = bench_status(list, &[&["--requests", "10"][..], extra].concat());
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let twice = [names[0].clone(), names[1].clone(), names[0].clone()];
    assert!(refused(&twice, &[]).contains("given twice"));
    assert!(refused(&names, &["--reconnect", "2"]).contains("--reconnect takes one --addr"));
    // A server that is not there fails the run before it starts, and is named.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let list = [names[0].clone(), gone.clone()];
    let stderr = refused(&list, &["--workload", "echo"]);
    assert!(
        stderr.contains(&format!("cannot connect to {gone}")),
        "{stderr}"
    );
}

/// Sends `requests` to the server at `addr`, `WINDOW` at a time; each answer must be OK.
fn pipelined<Req: courier_rpc::Message, Resp: courier_rpc::Message>(
    addr: SocketAddr,
    method: &courier_rpc::service::Method<Req, Resp>,
    requests: Vec<Req>,
) {
    let mut client = Client::connect(addr).expect("connect");
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let pending: Vec<_> = requests
            .by_ref()
            .take(WINDOW)
            .map(|r| client.send(method, &r).expect("send"))
            .collect();
        for p in pending {
            client.wait(p).unwrap_or_else(|e| panic!("on {addr}: {e}"));
        }
    }
}

/// 20,000 keys prefilled by courier-bench over three servers; with a fourth name, the keys
/// whose owner changes all move to the fourth server, none between the first three, and
/// they are a quarter of the keys. Once those keys are copied there, a run over the four
/// finds every key.
#[test]
fn adding_a_fourth_server_moves_a_quarter_of_the_keys_all_to_it() {
    const KEYS: u64 = 20_000;
    let dir = support::TempDir::new("bench-shards-move");
    let servers = start_servers(dir.path(), 4);
    let four = names(&servers);
    let three = four[..3].to_vec();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let keyspace = KEYS.to_string();
    let run = |names: &[String], requests: &str, extra: &[&str]| {
        let args = [
            &[
                "--workload",
                "get",
                "--keyspace",
                &keyspace,
                "--requests",
                requests,
                "--clients",
                "4",
                "--pipeline",
                "16",
                "--max-error-rate",
                "0",
            ][..],
            extra,
        ]
        .concat();
        bench(names, &args)
    };

    let report = run(&three, "2000", &["--prefill"]);
    assert_eq!(report["misses"], 0, "{report}");
    per_server(&report, &three);
    let keys: Vec<Bytes> = (0..KEYS).map(key).collect();
    let before = Rendezvous::new(three.iter().cloned());
    let after = Rendezvous::new(four.iter().cloned());
    let found = holders(&addrs[..3], &keys);
    let mut moved = Vec::new();
    for (k, (on, value)) in keys.iter().zip(found) {
        assert_eq!(on, [before.owner(k)], "{k:?} is not on its owner alone");
        let (old, new) = (before.owner(k), after.owner(k));
        if new != old {
            assert_eq!(
                new, 3,
                "{k:?} moves from {} to {}, not to the new server",
                three[old], four[new]
            );
            moved.push((k.clone(), old, value.expect("a value")));
        }
    }
    let fraction = moved.len() as f64 / KEYS as f64;
    eprintln!(
        "3 -> 4 servers ({}): {} of {KEYS} keys move ({fraction:.4}; 1/(N+1) = 0.25), all to {}",
        four.join(", "),
        moved.len(),
        four[3]
    );
    assert!(
        (fraction - 0.25).abs() <= 0.02,
        "{fraction} of the keys moved, not 0.25 +- 0.02"
    );

    // What an operator does before giving clients the new list: copy the keys that move to
    // the new server, and delete them from the old ones.
    pipelined(
        addrs[3],
        &SET,
        moved
            .iter()
            .map(|(key, _, value)| SetRequest {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    );
    for (s, addr) in addrs[..3].iter().enumerate() {
        let mine = moved
            .iter()
            .filter(|(_, old, _)| *old == s)
            .map(|(key, _, _)| Key(key.clone()))
            .collect();
        pipelined(*addr, &DELETE, mine);
    }
    assert_eq!(key_count(addrs[3]), moved.len() as u64);
    let total: u64 = addrs.iter().map(|a| key_count(*a)).sum();
    assert_eq!(total, KEYS);

    let report = run(&four, "20000", &[]);
    assert_eq!(
        report["misses"], 0,
        "every key is where the four names place it: {report}"
    );
    let counts = per_server(&report, &four);
    assert!(counts[3] > 0, "{counts:?}");
    let stale = run(&three, "4000", &[]);
    let misses = stale["misses"].as_u64().expect("misses");
    assert!(
        misses > 0 && misses < 4000,
        "a client with the old list misses the moved keys: {stale}"
    );
}
