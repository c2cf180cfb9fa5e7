//! The kv log when storage fails, end to end: real processes, real files. A full disk (a
//! small tmpfs, or a file size limit) fails the log's writes in the middle of group commits;
//! no write answered anything but OK may be found after a restart, and every OK'd one must.
//! Running out of file descriptors delays a compaction by seconds, not minutes.

mod support;

use std::io;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use courier::kv;
use courier::kv::record::{set_len, FILE_HEADER};
use support::kv_process::*;
use support::TempDir;

// ---- storage errors ----

/// The file size limit of the full-disk test: 64 KiB.
const FSIZE_LIMIT: libc::rlim_t = 64 * 1024;

#[test]
fn a_full_disk_fails_writes_but_serves_reads() {
    let started = Instant::now();
    let data = TempDir::new("kv-full-disk");
    let dir = data.path();
    let mut command = Server::command(dir, &["--fsync", "always"]);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls, `setrlimit` and
    // `signal`, on values on its stack, and allocates nothing (`last_os_error` only reads
    // errno). With SIGXFSZ ignored, a write past the limit fails with EFBIG instead of
    // killing the server; both settings survive the exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FSIZE_LIMIT,
                rlim_max: FSIZE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Server::launch(command).unwrap_or_else(|exited| {
        panic!(
            "kv-server exited with {}:\n{}",
            exited.status,
            exited.stderr.join("\n")
        )
    });
    let mut client = server.client();
    let value_of = |i: usize| -> Vec<u8> {
        let mut value = format!("value of full-{i:05}: ").into_bytes();
        value.resize(1024, b'v');
        value
    };
    let name = |i: usize| format!("full-{i:05}");

    // Distinct keys with 1 KiB values until a SET fails: about 62 fit in 64 KiB.
    let mut acked = 0;
    let refused = loop {
        assert!(
            acked < 200,
            "200 KiB written under a 64 KiB file size limit"
        );
        match set(&mut client, &name(acked), &value_of(acked)) {
            Ok(()) => acked += 1,
            Err(err) => break err,
        }
    };
    let first_refused = acked;
    println!("full disk: {acked} SETs acknowledged, then: {refused}");
    assert!(acked > 0, "the first SET fits under the limit");
    assert_refused("the SET that hit the limit", Err::<(), _>(refused));
    assert!(
        server
            .wait_for_line("refusing writes from now on", PROCESS_TIMEOUT)
            .is_some_and(|line| line.contains("ERROR")),
        "the server logs the storage error:\n{}",
        server.stderr_tail()
    );

    // Every write after it is refused, without being applied.
    for i in first_refused + 1..first_refused + 4 {
        assert_refused("a SET after the failure", set(&mut client, &name(i), b"x"));
        assert_eq!(
            get(&mut client, &name(i)),
            None,
            "a refused SET is not applied"
        );
    }
    for i in [0, acked / 2, acked - 1] {
        assert_refused(
            "a DELETE after the failure",
            client.call(&kv::DELETE, &key(&name(i))),
        );
    }
    // Reads go on: every acknowledged key has its value (the deletes were not applied).
    for i in 0..acked {
        assert_eq!(
            get(&mut client, &name(i)).as_deref(),
            Some(&value_of(i)[..]),
            "{}: an acknowledged value is served after the failure",
            name(i)
        );
    }
    // The SET that failed was applied in memory before its commit failed; either answer is
    // allowed until the restart.
    let visible = get(&mut client, &name(first_refused)).is_some();
    println!("full disk: the refused SET is visible before the restart: {visible}");
    drop(client);

    // The drain ends with the log's close, which reports the failure: exit code 1.
    let status = server.terminate_and_wait();
    assert_eq!(
        status.code(),
        Some(1),
        "a server whose log failed exits 1 after its drain:\n{}",
        server.stderr_tail()
    );
    assert!(
        server.count_lines("could not be flushed") > 0,
        "the exit says why:\n{}",
        server.stderr_tail()
    );

    // Restart without the limit: the acknowledged writes are there, the refused one is not,
    // and the record the limit cut short was truncated.
    let log = dir.join(LOG_FILE);
    let len = file_len(&log);
    let record = set_len(name(0).len(), 1024) as u64;
    let boundary = FILE_HEADER.len() as u64 + acked as u64 * record;
    assert!(
        len >= boundary && len <= FSIZE_LIMIT,
        "the log holds the {acked} acknowledged records ({boundary} bytes) and at most the \
         limit: {len}"
    );
    let server = Server::start(dir, &["--fsync", "always"]);
    let torn = server.wait_for_line("torn tail at byte", Duration::from_millis(200));
    if len > boundary {
        let line = torn.unwrap_or_else(|| {
            panic!(
                "a {}-byte partial record follows the last acknowledged one, but no torn tail \
                 was reported:\n{}",
                len - boundary,
                server.stderr_tail()
            )
        });
        assert!(
            line.contains(&format!("torn tail at byte {boundary} ")),
            "the torn tail is the record after the last acknowledged one, at {boundary}: {line}"
        );
        println!(
            "full disk: the limit cut a record after {} of its {record} bytes; the start \
             truncated it: {line}",
            len - boundary
        );
    } else {
        assert!(torn.is_none(), "no torn tail: {torn:?}");
        println!("full disk: the limit fell on a record boundary; nothing to truncate");
    }
    assert!(
        server
            .wait_for_line(&format!("replayed {acked} records"), PROCESS_TIMEOUT)
            .is_some(),
        "every acknowledged record is replayed:\n{}",
        server.stderr_tail()
    );
    let mut client = server.client();
    for i in 0..acked {
        assert_eq!(
            get(&mut client, &name(i)).as_deref(),
            Some(&value_of(i)[..]),
            "{}: acknowledged before the failure, so kept",
            name(i)
        );
    }
    assert_eq!(
        get(&mut client, &name(first_refused)),
        None,
        "the refused SET was never acknowledged and is gone after the restart"
    );
    assert_eq!(
        file_len(&log),
        boundary,
        "the log was truncated to its valid part"
    );
    println!(
        "a_full_disk_fails_writes_but_serves_reads: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
