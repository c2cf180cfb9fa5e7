//! The kv log when storage fails, end to end: real processes, real files. A full disk (a
//! small tmpfs, or a file size limit) fails the log's writes in the middle of group commits;
//! no write answered anything but OK may be found after a restart, and every OK'd one must.
//! Running out of file descriptors delays a compaction by seconds, not minutes.

mod support;

use std::io;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use courier_rpc::kv;
use courier_rpc::kv::log::record::{set_len, FILE_HEADER};
use courier_rpc::proto::Code;
use support::kv_process::*;
use support::TempDir;

// ---- storage errors ----

/// The file size limit of the full-disk test: 64 KiB.
const FSIZE_LIMIT: libc::rlim_t = 64 * 1024;

/// Makes writes of the server's files past `bytes` fail with EFBIG (`RLIMIT_FSIZE`, with
/// SIGXFSZ ignored so that it is an error, not a kill): a full disk without a filesystem.
fn limit_file_size(command: &mut std::process::Command, bytes: libc::rlim_t) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls, `setrlimit` and
    // `signal`, on values on its stack, and allocates nothing (`last_os_error` only reads
    // errno). Both settings survive the exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
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
}

#[test]
fn a_full_disk_fails_writes_but_serves_reads() {
    let started = Instant::now();
    let data = TempDir::new("kv-full-disk");
    let dir = data.path();
    let mut command = Server::command(dir, &["--fsync", "always"]);
    limit_file_size(&mut command, FSIZE_LIMIT);
    let mut server = Server::launch_or_panic(command);
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
    let status = status_of("the SET that hit the limit", Err::<(), _>(refused));
    assert_eq!(status.code, Code::UNAVAILABLE, "{status}");
    assert!(
        status.message.starts_with("not stored"),
        "the SET whose write failed was not stored: {status}"
    );
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
    // The SET whose write failed was applied in memory before its commit; the failure
    // undid it, so no read shows it.
    assert_eq!(
        get(&mut client, &name(first_refused)),
        None,
        "the SET answered 'not stored' is not shown to readers"
    );
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
        server.count_lines("the kv log failed during this run") > 0,
        "the exit says why:\n{}",
        server.stderr_tail()
    );

    // The failed write was cut off at once: the log ends with the last acknowledged record,
    // though the limit let part of the failed one in.
    let log = dir.join(LOG_FILE);
    let record = set_len(name(0).len(), 1024) as u64;
    let boundary = FILE_HEADER.len() as u64 + acked as u64 * record;
    assert_eq!(
        file_len(&log),
        boundary,
        "the log holds exactly the {acked} acknowledged records"
    );
    assert!(
        server.count_lines("undid the 1 writes of the failed batch") > 0,
        "the server says it undid the failed write:\n{}",
        server.stderr_tail()
    );

    // Restart without the limit: the acknowledged writes are there, the refused one is not,
    // and there is no torn tail to truncate.
    let server = Server::start(dir, &["--fsync", "always"]);
    let torn = server.wait_for_line("torn tail at byte", Duration::from_millis(200));
    assert!(torn.is_none(), "no torn tail: {torn:?}");
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
    println!(
        "a_full_disk_fails_writes_but_serves_reads: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---- a full disk in the middle of group commits ----

/// A tmpfs mounted over a directory for one test (as root), unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "4m") on `path`; `None` when this
    /// process may not mount (not root), said on stdout.
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs {
                path: path.to_owned(),
            }),
            _ => {
                println!("cannot mount a tmpfs (not root?); a file size limit stands in for it");
                None
            }
        }
    }

    /// Gives the filesystem `size` (`mount -o remount,size=`).
    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .arg("-o")
            .arg(format!("remount,size={size}"))
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remount {} with {size}",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Room for the log in the full-disk runs: 4 MiB, as a tmpfs or as a file size limit.
const SMALL_DISK: libc::rlim_t = 4 * 1024 * 1024;

/// What one SET was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    /// UNAVAILABLE: not stored (its commit's write failed) or refused (the log had failed).
    NotStored,
    /// UNKNOWN: outcome unknown.
    Unknown,
    /// No answer (the connection failed): either outcome.
    None,
}

/// The value of a full-disk key: its name, padded to 1 KiB.
fn disk_value(name: &str) -> Vec<u8> {
    let mut value = format!("{name}:").into_bytes();
    value.resize(1024, b'v');
    value
}

/// One client of the full-disk runs: batches of 8 pipelined SETs of new keys
/// (`c<client>-<n>`) until a whole batch is refused; every answer is recorded.
fn fill_disk(mut client: courier_rpc::client::Client, id: usize) -> Vec<(String, Answer)> {
    let mut answers = Vec::new();
    for batch in 0..2_000 {
        let mut pending = Vec::with_capacity(8);
        for n in 0..8 {
            let name = format!("c{id:02}-{:05}", batch * 8 + n);
            let request = kv::SetRequest {
                key: bytes::Bytes::from(name.clone().into_bytes()),
                value: bytes::Bytes::from(disk_value(&name)),
            };
            match client.send(&kv::SET, &request) {
                Ok(p) => pending.push((name, p)),
                Err(_) => return answers,
            }
        }
        let mut refused = 0;
        for (name, p) in pending {
            let answer = match client.wait(p) {
                Ok(()) => Answer::Ok,
                Err(courier_rpc::client::ClientError::Status(s)) if s.code == Code::UNAVAILABLE => {
                    refused += 1;
                    Answer::NotStored
                }
                Err(courier_rpc::client::ClientError::Status(s)) if s.code == Code::UNKNOWN => {
                    Answer::Unknown
                }
                Err(courier_rpc::client::ClientError::Status(s)) => {
                    panic!("{name}: unexpected answer {s}")
                }
                Err(_) => Answer::None,
            };
            answers.push((name, answer));
        }
        if refused == 8 {
            return answers;
        }
    }
    panic!("client {id}: 16,000 KiB of SETs on a 4 MiB disk were not refused");
}

/// What the full-disk runs found.
#[derive(Debug, Default)]
struct DiskFullTotals {
    runs: usize,
    acked: usize,
    not_stored: usize,
    unknown: usize,
    /// Answered anything but OK, and found after the restart (must be 0).
    refused_but_present: usize,
    /// Answered OK, and missing after the restart (must be 0).
    acked_but_missing: usize,
    /// Writes undone by the failed commit, as the server reported them.
    undone: Vec<usize>,
}

#[test]
fn a_full_disk_in_the_middle_of_group_commits_keeps_no_refused_write() {
    // 16 clients pipelining 8 SETs each: a group commit writes many records at once, and
    // the write that finds the disk full stores a prefix of them before it fails. That prefix
    // must not come back after a restart, and no read may show it before.
    let runs = cycles_from_env("COURIER_DISK_FULL_RUNS", 3);
    let mut totals = DiskFullTotals::default();
    let started = Instant::now();
    for run in 0..runs {
        let data = TempDir::new("kv-disk-full");
        let tmpfs = Tmpfs::mount(data.path(), "4m");
        let dir = data.path().join("data");
        let mut command = Server::command(&dir, &["--fsync", "always"]);
        if tmpfs.is_none() {
            limit_file_size(&mut command, SMALL_DISK);
        }
        let mut server = Server::launch_or_panic(command);
        let clients: Vec<_> = (0..16)
            .map(|id| {
                let client = server.client();
                std::thread::spawn(move || fill_disk(client, id))
            })
            .collect();
        let answers: Vec<(String, Answer)> = clients
            .into_iter()
            .flat_map(|t| t.join().expect("a client thread"))
            .collect();
        let line = server
            .wait_for_line("of the failed batch", PROCESS_TIMEOUT)
            .unwrap_or_else(|| panic!("no failed batch was undone:\n{}", server.stderr_tail()));
        let undone: usize = line
            .split("undid the ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        totals.undone.push(undone);

        // Before the restart, reads show exactly the acknowledged writes.
        let mut client = server.client();
        for (name, answer) in &answers {
            let found = get(&mut client, name);
            match answer {
                Answer::Ok => assert_eq!(
                    found.as_deref(),
                    Some(&disk_value(name)[..]),
                    "run {run}: {name} was acknowledged"
                ),
                Answer::NotStored => assert_eq!(found, None, "run {run}: {name} was not stored"),
                Answer::Unknown | Answer::None => {}
            }
        }
        drop(client);
        server.kill9();

        // Restart with room.
        if let Some(tmpfs) = &tmpfs {
            tmpfs.resize("64m");
        }
        let server = Server::start(&dir, &["--fsync", "always"]);
        let mut client = server.client();
        for (name, answer) in &answers {
            let found = get(&mut client, name);
            match answer {
                Answer::Ok => {
                    totals.acked += 1;
                    if found.as_deref() != Some(&disk_value(name)[..]) {
                        totals.acked_but_missing += 1;
                        println!("run {run}: {name} was acknowledged, found {found:?}");
                    }
                }
                Answer::NotStored => {
                    totals.not_stored += 1;
                    if found.is_some() {
                        totals.refused_but_present += 1;
                    }
                }
                Answer::Unknown => totals.unknown += 1,
                Answer::None => {}
            }
        }
        totals.runs += 1;
        drop(client);
        drop(server);
        drop(tmpfs);
    }
    println!(
        "disk full: {} runs in {:.1} s: {} SETs acknowledged, {} not stored, {} unknown; \
         writes undone per failed commit: {:?}; refused but present after the restart: {}, \
         acknowledged but missing: {}",
        totals.runs,
        started.elapsed().as_secs_f64(),
        totals.acked,
        totals.not_stored,
        totals.unknown,
        totals.undone,
        totals.refused_but_present,
        totals.acked_but_missing
    );
    assert_eq!(totals.refused_but_present, 0, "{totals:?}");
    assert_eq!(totals.acked_but_missing, 0, "{totals:?}");
    assert!(totals.acked > 0 && totals.not_stored > 0, "{totals:?}");
}

// ---- out of file descriptors ----

/// The descriptor limit of the compaction test's server: 40, soft and hard (so the server
/// cannot raise it), a handful above what it opens for itself.
const FD_LIMIT: libc::rlim_t = 40;

#[test]
fn a_compaction_out_of_descriptors_is_retried_within_seconds() {
    // The server runs out of descriptors (connections take them all) just as its log is due
    // for compaction: creating kv.log.compact fails with EMFILE. Once connections close, the
    // next attempt comes a second or two later, not a minute, while the log keeps growing.
    support::raise_fd_limit();
    let data = TempDir::new("kv-compact-fds");
    let dir = data.path();
    let mut command = Server::command(
        dir,
        &[
            "--fsync",
            "everysec",
            "--compact-min-size",
            "16384",
            "--compact-ratio",
            "2",
        ],
    );
    // SAFETY: one system call on a value on the stack, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::launch_or_panic(command);
    let mut writer = server.client();
    // Take every descriptor the server has left (the ones past its limit are refused).
    let mut held = Vec::new();
    for _ in 0..2 * FD_LIMIT {
        held.push(std::net::TcpStream::connect(server.addr).expect("connect"));
    }
    let report = support::hostile_wait_for_stats(&mut writer, Duration::from_secs(10), |r| {
        r.value("connections_rejected_fd") > 0
    });
    assert!(
        report.value("connections_rejected_fd") > 0,
        "the server ran out of descriptors: {report:?}"
    );
    // Grow the log past the minimum with overwrites of one key: due for compaction.
    let value = vec![b'x'; 512];
    let mut writes = 0;
    let failed = loop {
        set(&mut writer, "overwritten", &value).expect("SET while out of descriptors");
        writes += 1;
        if let Some(line) = server.wait_for_line("compaction failed", Duration::from_millis(5)) {
            break line;
        }
        assert!(
            writes < 5_000,
            "no compaction was tried:\n{}",
            server.stderr_tail()
        );
    };
    println!("out of descriptors after {writes} SETs: {failed}");
    assert!(failed.contains("Too many open files"), "{failed}");
    assert!(failed.contains("retrying in 1 s"), "{failed}");
    // Free the descriptors: the server sees each connection end and closes it.
    drop(held);
    let freed = Instant::now();
    let done = server.wait_for_line("compacted ", Duration::from_secs(15));
    let line = done.unwrap_or_else(|| {
        panic!(
            "no compaction within 15 s of the descriptors coming back:\n{}",
            server.stderr_tail()
        )
    });
    println!(
        "compacted {:.1} s after the descriptors came back: {line}",
        freed.elapsed().as_secs_f64()
    );
    assert_eq!(
        get(&mut writer, "overwritten").as_deref(),
        Some(&value[..]),
        "the key survives the compaction"
    );
}

// ---- a failed fsync ----

/// A preloaded library that makes `fdatasync` fail with EIO while the file named by
/// `COURIER_FAIL_FSYNC_IF` exists, and calls the real one otherwise.
const FAIL_FSYNC_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
int fdatasync(int fd) {
    const char *flag = getenv("COURIER_FAIL_FSYNC_IF");
    if (flag != NULL && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

#[test]
fn a_failed_fsync_answers_outcome_unknown_and_refuses_writes() {
    // Under `always`, an fsync that fails may have lost what it covered (the kernel may drop
    // the pages it could not write): the writes waiting for it are answered UNKNOWN, not
    // UNAVAILABLE, a read of them shows nothing, and no later fsync is trusted.
    let data = TempDir::new("kv-failed-fsync");
    let shim_dir = TempDir::new("kv-failed-fsync-shim");
    let source = shim_dir.path().join("failfsync.c");
    std::fs::write(&source, FAIL_FSYNC_SHIM).expect("write the shim's source");
    let shim = shim_dir.path().join("libfailfsync.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("run cc (the C compiler every Rust build on Linux links with)");
    assert!(built.success(), "cc built the shim");
    let flag = shim_dir.path().join("fail-now");
    let dir = data.path().join("data");
    let mut command = Server::command(&dir, &["--fsync", "always"]);
    command
        .env("LD_PRELOAD", &shim)
        .env("COURIER_FAIL_FSYNC_IF", &flag);
    let mut server = Server::launch_or_panic(command);
    let mut client = server.client();
    for k in ["a", "b"] {
        set(&mut client, k, k.as_bytes()).expect("SET before the failure");
    }
    std::fs::write(&flag, b"").expect("create the flag");
    let unknown = status_of("the SET whose fsync fails", set(&mut client, "c", b"c"));
    assert_eq!(unknown.code, Code::UNKNOWN, "{unknown}");
    assert!(unknown.message.starts_with("outcome unknown"), "{unknown}");
    assert_refused("a SET after the failure", set(&mut client, "d", b"d"));
    // A read of the key whose outcome is unknown shows nothing.
    let read = client.call(&kv::GET, &key("c"));
    match read {
        Err(courier_rpc::client::ClientError::Status(s)) => {
            assert_eq!(s.code, Code::UNKNOWN, "{s}")
        }
        other => panic!("GET c: expected UNKNOWN, got {other:?}"),
    }
    // Reads of the durable keys answer their value, or UNKNOWN where they share a shard of
    // the store with c; never anything else.
    for k in ["a", "b"] {
        match client.call(&kv::GET, &key(k)) {
            Ok(value) => assert_eq!(&value.0[..], k.as_bytes()),
            Err(courier_rpc::client::ClientError::Status(s)) if s.code == Code::UNKNOWN => {}
            other => panic!("GET {k}: {other:?}"),
        }
    }
    std::fs::remove_file(&flag).expect("remove the flag");
    drop(client);
    let status = server.terminate_and_wait();
    assert_eq!(status.code(), Some(1), "{}", server.stderr_tail());

    // Restarted without the shim: the acknowledged writes are there, the refused one is not;
    // c may be either.
    let server = Server::start(&dir, &["--fsync", "always"]);
    let mut client = server.client();
    assert_eq!(get(&mut client, "a").as_deref(), Some(&b"a"[..]));
    assert_eq!(get(&mut client, "b").as_deref(), Some(&b"b"[..]));
    assert_eq!(
        get(&mut client, "d"),
        None,
        "the refused SET was not applied"
    );
    println!(
        "failed fsync: c after the restart: {:?}",
        get(&mut client, "c")
    );
}
