//! Recovery of the kv log from the command line: a torn tail is truncated with a warning,
//! damage before the tail refuses to start, and `--repair` keeps the valid prefix.

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use courier_rpc::kv::log::record::{set_len, FILE_HEADER};

use support::kv_process::*;
use support::TempDir;

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
