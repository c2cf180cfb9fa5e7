//! Durability of kv-server's append-only log, end to end: real processes, real sockets, real
//! files. Servers are killed with SIGKILL at random points (also in the middle of
//! compactions) while writers write and readers read, and SIGTERM drains a server with
//! requests in flight. No acknowledged write may be lost, no deleted key come back, and no
//! value a reader was shown be taken back by the crash.
//!
//! The randomised tests print their seed; `COURIER_DURABILITY_SEED=<n>` replays the same
//! choices (the interleaving of threads and the kill instants are the machine's own).
//! `COURIER_CRASH_CYCLES` (default 50) and `COURIER_COMPACTION_CYCLES` (default 100) set the
//! number of kill cycles.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::kv::{self, Deleted, SetRequest};
use courier_rpc::proto::Code;
use support::kv_process::*;
use support::TempDir;

/// How often the log's background thread looks for a due compaction (the first look is this
/// long after the log is opened).
const COMPACTION_TICK: Duration = Duration::from_millis(100);

// ---- crash cycles: the model of acknowledged writes ----

/// What a key may be found holding after a crash: the state its last acknowledged write left
/// it in, then the state of a write that was in flight when the server was killed (which may
/// or may not have been applied). `None`: absent.
type Possible = Vec<Option<Bytes>>;

/// Every key ever written in a run, with what it may hold.
#[derive(Default)]
struct Model {
    keys: HashMap<String, Possible>,
}

/// When a cycle's SIGKILL comes.
#[derive(Clone, Copy, Debug)]
enum KillClock {
    /// At a random point of the range after the writers start.
    AfterWritersStart,
    /// At a random point of the range after the log's background thread first looked for a
    /// due compaction ([`COMPACTION_TICK`] after the log was opened, which is just before the
    /// server listens): in the middle of the compaction that look started, or after it.
    AfterFirstCompactionCheck,
}

/// One run of crash cycles on one data directory.
#[derive(Clone, Copy, Debug)]
struct CrashPlan {
    test: &'static str,
    args: &'static [&'static str],
    cycles: usize,
    writers: u64,
    keys_per_writer: u64,
    /// Values are at least this long (a unique prefix, padded).
    value_len: usize,
    /// Share of writes that are DELETEs, in percent.
    delete_percent: u64,
    /// The SIGKILL comes at a random point of one of these ranges (ms; cycle `i` uses range
    /// `i % len`) after `kill_clock`'s start, and never before the cycle's first acknowledged
    /// write.
    kill_after_ms: &'static [(u64, u64)],
    kill_clock: KillClock,
}

/// What a run saw.
#[derive(Debug, Default)]
struct Totals {
    cycles: usize,
    acked: u64,
    /// Writes whose answer was lost to a kill.
    in_doubt: u64,
    /// Of those, how many the restarted server had applied.
    in_doubt_applied: u64,
    compactions: usize,
    /// Starts that removed a compaction's file a kill left behind.
    unfinished_compactions: usize,
    torn_tails: usize,
    /// Compactions that failed (none may on a healthy disk).
    compaction_failures: usize,
    /// The first lines the servers logged at ERROR (none may: the disk is fine).
    errors: Vec<String>,
}

impl Totals {
    /// Asserts that no server logged an error: on a healthy disk a kill is the only failure.
    fn assert_no_errors(&self, test: &str) {
        assert!(
            self.errors.is_empty(),
            "{test}: the servers logged errors ({} compactions failed); the first:\n{}",
            self.compaction_failures,
            self.errors.join("\n")
        );
    }
}

/// How one writer thread ended.
struct WriterEnd {
    acked: u64,
    in_doubt: bool,
    error: String,
}

/// Writes until its first error: SETs (new keys and overwrites, each value unique) and
/// DELETEs in its own keys (`w<writer>-k<n>`), one at a time, each acknowledged write
/// recorded in `model`.
fn write_until_killed(
    plan: CrashPlan,
    mut client: Client,
    mut rng: Rng,
    model: &Mutex<Model>,
    acked_this_cycle: &AtomicU64,
    cycle: usize,
    writer: u64,
) -> WriterEnd {
    let mut acked = 0;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let name = format!("w{writer}-k{:03}", rng.range(0, plan.keys_per_writer - 1));
        let delete = rng.percent(plan.delete_percent);
        let (new_state, result) = if delete {
            let result = client.call(&kv::DELETE, &key(&name));
            if let Ok(Deleted(deleted)) = result {
                // Whether the key was there is known exactly: every earlier write to it was
                // this thread's, and the start of the cycle resolved any in doubt.
                let model = lock(model);
                let known = model.keys.get(&name).map_or(&[None][..], Vec::as_slice);
                assert_eq!(
                    known.len(),
                    1,
                    "{name}: the state is known outside the kill's window"
                );
                assert_eq!(
                    deleted,
                    known[0].is_some(),
                    "{}: cycle {cycle}: DELETE {name} answered {deleted}, but the model holds {:?}",
                    plan.test,
                    known[0]
                );
            }
            (None, result.map(|_| ()))
        } else {
            let mut value = format!("cycle-{cycle}-w{writer}-{seq}-").into_bytes();
            value.resize(plan.value_len.max(value.len()), b'.');
            let value = Bytes::from(value);
            let result = set(&mut client, &name, &value);
            (Some(value), result)
        };
        let mut model = lock(model);
        let possible = model.keys.entry(name).or_insert_with(|| vec![None]);
        match result {
            Ok(()) => {
                *possible = vec![new_state];
                acked += 1;
                acked_this_cycle.fetch_add(1, Ordering::SeqCst);
            }
            Err(err) => {
                if !possible.contains(&new_state) {
                    possible.push(new_state);
                }
                return WriterEnd {
                    acked,
                    in_doubt: true,
                    error: match err {
                        // The server answered: not a kill's doing.
                        ClientError::Status(status) => format!("answered {status}"),
                        other => other.to_string(),
                    },
                };
            }
        }
    }
}

/// Checks every key of `model` against the server: each holds one of its possible states.
/// Then each key's state is what was found (a write in doubt is settled).
fn verify(server: &Server, model: &Mutex<Model>, totals: &mut Totals, context: &str, dir: &Path) {
    let mut client = server.client();
    let snapshot: Vec<(String, Possible)> = lock(model)
        .keys
        .iter()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let mut wrong = Vec::new();
    let mut found_states = Vec::with_capacity(snapshot.len());
    for batch in snapshot.chunks(256) {
        let pending: Vec<_> = batch
            .iter()
            .map(|(k, _)| client.send(&kv::GET, &key(k)).expect("send a GET"))
            .collect();
        for ((k, possible), pending) in batch.iter().zip(pending) {
            let found = match client.wait(pending) {
                Ok(value) => Some(value.0),
                Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => None,
                Err(err) => panic!("{context}: GET {k} failed: {err}"),
            };
            if !possible.contains(&found) {
                wrong.push(format!(
                    "{k}: found {found:?}, expected one of {possible:?}"
                ));
            }
            if possible.len() > 1 {
                totals.in_doubt += 1;
                if possible.last() == Some(&found) {
                    totals.in_doubt_applied += 1;
                }
            }
            found_states.push((k.clone(), found));
        }
    }
    if !wrong.is_empty() {
        let kept = keep_evidence(dir, &context.replace([' ', '/', ':', ','], "-"));
        panic!(
            "{context}: {} of {} keys hold what no acknowledged write left there \
             (a lost acknowledged write or a resurrected key); the log is kept at {}:\n{}\n\
             server stderr:\n{}",
            wrong.len(),
            snapshot.len(),
            kept.display(),
            wrong.join("\n"),
            server.stderr_tail()
        );
    }
    let mut model = lock(model);
    for (k, found) in found_states {
        model.keys.insert(k, vec![found]);
    }
}

/// Runs `plan`: each cycle starts the server on the same directory, verifies every key, lets
/// writers write, and kills the server with SIGKILL.
fn run_crash_cycles(plan: CrashPlan) -> Totals {
    let started = Instant::now();
    let seed = seed(plan.test);
    let data = TempDir::new(plan.test);
    let dir = data.path();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut totals = Totals::default();
    for cycle in 0..plan.cycles {
        let context = format!("{} seed {seed} cycle {cycle}", plan.test);
        let mut rng = Rng::derive(seed, &[cycle as u64]);

        // A compaction's file a kill left behind is removed on start, before the server
        // listens; the next compaction cannot begin before the first look, 100 ms later.
        let compact_path = dir.join(COMPACT_FILE);
        let leftover = compact_path.exists();
        let spawned_at = SystemTime::now();
        let server_started = Instant::now();
        let mut server = Server::start(dir, plan.args);
        let listening = Instant::now();
        if let Ok(meta) = fs::metadata(&compact_path) {
            let modified = meta.modified().expect("mtime of kv.log.compact");
            assert!(
                modified > spawned_at,
                "{context}: a kv.log.compact from before the start is still there:\n{}",
                server.stderr_tail()
            );
        }
        if leftover {
            totals.unfinished_compactions += 1;
            assert!(
                server
                    .wait_for_line("removed an unfinished compaction", PROCESS_TIMEOUT)
                    .is_some(),
                "{context}: the start removes the unfinished compaction and says so:\n{}",
                server.stderr_tail()
            );
        }
        let replayed = server
            .wait_for_line("replayed ", PROCESS_TIMEOUT)
            .unwrap_or_else(|| panic!("{context}: no 'replayed' line:\n{}", server.stderr_tail()));
        if server.count_lines("torn tail at byte") > 0 {
            totals.torn_tails += 1;
        }

        verify(&server, &model, &mut totals, &context, dir);

        let acked_this_cycle = Arc::new(AtomicU64::new(0));
        let writers_started = Instant::now();
        let writers: Vec<_> = (0..plan.writers)
            .map(|writer| {
                let client = server.client();
                let rng = Rng::derive(seed, &[cycle as u64, writer + 1]);
                let model = Arc::clone(&model);
                let acked = Arc::clone(&acked_this_cycle);
                thread::spawn(move || {
                    write_until_killed(plan, client, rng, &model, &acked, cycle, writer)
                })
            })
            .collect();

        let (lo, hi) = plan.kill_after_ms[cycle % plan.kill_after_ms.len()];
        let delay = Duration::from_millis(rng.range(lo, hi));
        let kill_at = match plan.kill_clock {
            KillClock::AfterWritersStart => writers_started + delay,
            KillClock::AfterFirstCompactionCheck => listening + COMPACTION_TICK + delay,
        };
        loop {
            let now = Instant::now();
            if now >= kill_at && acked_this_cycle.load(Ordering::SeqCst) > 0 {
                break;
            }
            if now > writers_started + PROCESS_TIMEOUT {
                panic!(
                    "{context}: no write acknowledged within {PROCESS_TIMEOUT:?}:\n{}",
                    server.stderr_tail()
                );
            }
            thread::sleep(
                kill_at
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(2)),
            );
        }
        let lived = server_started.elapsed();
        server.kill9();

        let mut acked = 0;
        let mut in_doubt = 0;
        for writer in writers {
            let end = writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            assert!(
                !end.error.starts_with("answered"),
                "{context}: a write was {} (the disk is fine: only the kill may fail a write)",
                end.error
            );
            acked += end.acked;
            in_doubt += u64::from(end.in_doubt);
        }
        assert!(acked > 0, "{context}: no write acknowledged");
        let compactions = server.count_lines("compacted ");
        let errors: Vec<String> = server
            .stderr_lines()
            .into_iter()
            .filter(|line| line.contains(" ERROR "))
            .collect();
        let compaction_failures = errors
            .iter()
            .filter(|line| line.contains("compaction failed"))
            .count();
        totals.compaction_failures += compaction_failures;
        for line in errors {
            if totals.errors.len() < 5 {
                totals.errors.push(format!("cycle {cycle}: {line}"));
            }
        }
        totals.cycles += 1;
        totals.acked += acked;
        totals.compactions += compactions;
        println!(
            "{context}: acked {acked}, {in_doubt} in flight at the kill after {} ms, \
             {compactions} compaction(s) finished, {compaction_failures} failed; start: {}",
            lived.as_millis(),
            replayed.split("kv.log: ").last().unwrap_or(&replayed)
        );
    }

    // A last start: every acknowledged write of the last cycle is there too.
    let server = Server::start(dir, plan.args);
    let context = format!("{} seed {seed} final start", plan.test);
    verify(&server, &model, &mut totals, &context, dir);
    drop(server);

    println!(
        "{}: {} cycles, {} acknowledged writes, {} in doubt at a kill ({} of them applied), \
         {} compactions finished and {} failed, {} unfinished compactions removed on start, \
         {} torn tails truncated; {} keys; {:.1} s",
        plan.test,
        totals.cycles,
        totals.acked,
        totals.in_doubt,
        totals.in_doubt_applied,
        totals.compactions,
        totals.compaction_failures,
        totals.unfinished_compactions,
        totals.torn_tails,
        lock(&model).keys.len(),
        started.elapsed().as_secs_f64()
    );
    totals
}

/// The crash cycles of an fsync policy: two writers, SIGKILL at a random point 20 to 150 ms
/// into their writing.
fn crash_plan(test: &'static str, args: &'static [&'static str], cycles: usize) -> CrashPlan {
    CrashPlan {
        test,
        args,
        cycles,
        writers: 2,
        keys_per_writer: 150,
        value_len: 32,
        delete_percent: 20,
        kill_after_ms: &[(20, 150)],
        kill_clock: KillClock::AfterWritersStart,
    }
}

#[test]
fn crash_always_loses_no_acknowledged_write() {
    let cycles = cycles_from_env("COURIER_CRASH_CYCLES", 50);
    let totals = run_crash_cycles(crash_plan("crash_always", &["--fsync", "always"], cycles));
    assert_eq!(totals.cycles, cycles);
    assert!(totals.acked >= cycles as u64, "{totals:?}");
    totals.assert_no_errors("crash_always");
}

#[test]
fn crash_everysec_loses_no_acknowledged_write_on_a_process_crash() {
    // A write is acknowledged once it is in the file, synced or not; the kernel keeps the
    // page cache when the process dies, so a SIGKILL loses nothing acknowledged.
    let totals = run_crash_cycles(crash_plan("crash_everysec", &["--fsync", "everysec"], 10));
    assert_eq!(totals.cycles, 10);
    assert!(totals.acked >= 10, "{totals:?}");
    totals.assert_no_errors("crash_everysec");
}

#[test]
fn compaction_killed_at_random_points_never_loses_or_resurrects_a_key() {
    let cycles = cycles_from_env("COURIER_COMPACTION_CYCLES", 100);
    let totals = run_crash_cycles(CrashPlan {
        test: "crash_compaction",
        args: &[
            "--fsync",
            "always",
            "--compact-min-size",
            "4096",
            "--compact-ratio",
            "1.5",
        ],
        cycles,
        writers: 1,
        keys_per_writer: 50,
        value_len: 100,
        delete_percent: 25,
        // A compaction of this log takes a few ms (three fsyncs), so every other kill
        // comes within 15 ms of the look that starts one, to land inside it more often.
        kill_after_ms: &[(10, 80), (0, 15)],
        kill_clock: KillClock::AfterFirstCompactionCheck,
    });
    assert_eq!(totals.cycles, cycles);
    totals.assert_no_errors("crash_compaction");
    assert!(
        totals.compactions > 0,
        "no compaction finished between the kills, so none was tested: {totals:?}"
    );
}

// ---- crash cycles: what readers were shown ----

/// The version a value of the readers' test carries: its first 12 bytes, in decimal.
fn version_of(value: &[u8]) -> u64 {
    std::str::from_utf8(value.get(..12).unwrap_or_default())
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not a versioned value: {value:?}"))
}

/// What the readers' test knows of one key: every write to it is one writer's, with
/// increasing versions.
#[derive(Clone, Copy, Debug, Default)]
struct Versions {
    /// The largest version sent (applied or not).
    sent: u64,
    /// The largest version acknowledged.
    acked: u64,
    /// The largest version a reader was shown.
    seen: u64,
}

/// Writes increasing versions of its keys (`w<writer>-k<n>`) in pipelined batches of 16
/// SETs until its first error; records what was sent and acknowledged.
fn write_versions(
    mut client: Client,
    mut rng: Rng,
    writer: u64,
    keys: u64,
    model: &Mutex<HashMap<String, Versions>>,
) {
    loop {
        let mut batch = Vec::with_capacity(16);
        for _ in 0..16 {
            let name = format!("w{writer}-k{:03}", rng.range(0, keys - 1));
            let version = {
                let mut model = lock(model);
                let versions = model.entry(name.clone()).or_default();
                versions.sent += 1;
                versions.sent
            };
            let mut value = format!("{version:012}-").into_bytes();
            value.resize(48, b'.');
            let request = SetRequest {
                key: Bytes::from(name.clone().into_bytes()),
                value: Bytes::from(value),
            };
            match client.send(&kv::SET, &request) {
                Ok(pending) => batch.push((name, version, pending)),
                Err(_) => return,
            }
        }
        for (name, version, pending) in batch {
            if client.wait(pending).is_err() {
                return;
            }
            let mut model = lock(model);
            let versions = model.entry(name).or_default();
            versions.acked = versions.acked.max(version);
        }
    }
}

/// GETs random keys of every writer in pipelined batches of 16 until its first error;
/// records the largest version each key was shown with.
fn read_versions(
    mut client: Client,
    mut rng: Rng,
    writers: u64,
    keys: u64,
    model: &Mutex<HashMap<String, Versions>>,
) -> u64 {
    let mut shown = 0;
    loop {
        let mut batch = Vec::with_capacity(16);
        for _ in 0..16 {
            let name = format!(
                "w{}-k{:03}",
                rng.range(0, writers - 1),
                rng.range(0, keys - 1)
            );
            match client.send(&kv::GET, &kv::Key(Bytes::from(name.clone().into_bytes()))) {
                Ok(pending) => batch.push((name, pending)),
                Err(_) => return shown,
            }
        }
        for (name, pending) in batch {
            match client.wait(pending) {
                Ok(value) => {
                    shown += 1;
                    let version = version_of(&value.0);
                    let mut model = lock(model);
                    let versions = model.entry(name).or_default();
                    versions.seen = versions.seen.max(version);
                }
                Err(ClientError::Status(s)) if s.code == Code::NOT_FOUND => {}
                Err(_) => return shown,
            }
        }
    }
}

/// After a restart: every key holds a version at least as new as any acknowledged or shown
/// before the kill, and no newer than any sent. Returns how many keys were checked and how
/// many held a version no reader or writer had been told of.
fn verify_versions(
    server: &Server,
    model: &Mutex<HashMap<String, Versions>>,
    context: &str,
) -> (usize, usize) {
    let mut client = server.client();
    let keys: Vec<(String, Versions)> = lock(model).iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut wrong = Vec::new();
    let mut ahead = 0;
    for (name, versions) in &keys {
        let found = get(&mut client, name).map_or(0, |value| version_of(&value));
        let floor = versions.acked.max(versions.seen);
        if found < floor || found > versions.sent {
            wrong.push(format!(
                "{name}: found version {found}, expected {floor}..={} ({versions:?})",
                versions.sent
            ));
        }
        if found > floor {
            ahead += 1;
        }
        // From here on, what was found is what the key holds for sure.
        let mut model = lock(model);
        let entry = model.entry(name.clone()).or_default();
        entry.acked = found;
        entry.seen = found;
    }
    assert!(
        wrong.is_empty(),
        "{context}: {} of {} keys lost a version that was acknowledged or shown to a reader:\n{}\n\
         server stderr:\n{}",
        wrong.len(),
        keys.len(),
        wrong.join("\n"),
        server.stderr_tail()
    );
    (keys.len(), ahead)
}

#[test]
fn crash_always_takes_back_nothing_a_reader_was_shown() {
    // Under `always` no answer may show a write that is not yet durable: a GET that sees a
    // SET waits for that SET's commit, on whichever event loop it runs (two here, readers
    // and writers spread over them). Compactions pause the log's writes for their last step,
    // which widens the window in which a SET is applied but not yet written.
    let cycles = cycles_from_env("COURIER_READER_CYCLES", 40);
    let test = "crash_readers";
    let seed = seed(test);
    let data = TempDir::new(test);
    let dir = data.path();
    let args = [
        "--fsync",
        "always",
        "--loops",
        "2",
        "--compact-min-size",
        "65536",
        "--compact-ratio",
        "1.2",
    ];
    let (writers, readers, keys) = (2u64, 2u64, 40u64);
    let model = Arc::new(Mutex::new(HashMap::<String, Versions>::new()));
    let started = Instant::now();
    let mut shown = 0;
    for cycle in 0..cycles {
        let context = format!("{test} seed {seed} cycle {cycle}");
        let mut rng = Rng::derive(seed, &[cycle as u64]);
        let mut server = Server::start(dir, &args);
        verify_versions(&server, &model, &context);
        let mut threads = Vec::new();
        for writer in 0..writers {
            let (client, model) = (server.client(), Arc::clone(&model));
            let rng = Rng::derive(seed, &[cycle as u64, writer]);
            threads.push(thread::spawn(move || {
                write_versions(client, rng, writer, keys, &model);
                0
            }));
        }
        for reader in 0..readers {
            let (client, model) = (server.client(), Arc::clone(&model));
            let rng = Rng::derive(seed, &[cycle as u64, 100 + reader]);
            threads.push(thread::spawn(move || {
                read_versions(client, rng, writers, keys, &model)
            }));
        }
        thread::sleep(Duration::from_millis(rng.range(20, 150)));
        server.kill9();
        for thread in threads {
            shown += thread.join().expect("a reader or writer thread");
        }
    }
    let server = Server::start(dir, &args);
    let (checked, ahead) = verify_versions(&server, &model, &format!("{test} seed {seed} final"));
    println!(
        "{test}: {cycles} SIGKILL cycles, {shown} values shown to readers, {checked} keys, \
         {ahead} ahead of what anyone was told (in flight at the kill); {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(shown > 0, "the readers were shown values");
}

// ---- graceful drain ----

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let started = Instant::now();
    let data = TempDir::new("kv-drain");
    let dir = data.path();
    let mut server = Server::start(dir, &["--fsync", "always"]);
    // No round trip first: the connection may still be in the listen backlog when the drain
    // begins, and must be drained (GOAWAY) like an accepted one, not reset.
    let mut client = server.client();
    let requests = 200;
    let pending: Vec<_> = (0..requests)
        .map(|i| {
            let request = SetRequest {
                key: Bytes::from(format!("drain-{i:03}")),
                value: Bytes::from(format!("value-{i:03}")),
            };
            client.send(&kv::SET, &request).expect("queue a SET")
        })
        .collect();
    client.flush().expect("write the SETs");
    server.terminate();
    let terminated = Instant::now();

    let mut succeeded = Vec::new();
    let mut refused = 0;
    for (i, pending) in pending.into_iter().enumerate() {
        let id = pending.request_id();
        match client.wait(pending) {
            Ok(()) => succeeded.push(i),
            Err(ClientError::Status(status)) if status.code == Code::UNAVAILABLE => refused += 1,
            Err(err) => panic!(
                "SET {i} (request {id}): only UNAVAILABLE (above the GOAWAY's last id) may \
                 fail a request during a drain, got: {err}\n{}",
                server.stderr_tail()
            ),
        }
    }
    // Ids are sent in order, so the answered ones are a prefix.
    assert_eq!(
        succeeded,
        (0..succeeded.len()).collect::<Vec<_>>(),
        "the requests answered are those up to the GOAWAY's last id"
    );
    println!(
        "drain: {} of {requests} SETs answered OK, {refused} refused after the GOAWAY",
        succeeded.len()
    );
    drop(client);
    let limit = Duration::from_secs(DRAIN_TIMEOUT_SECS) + EXIT_MARGIN;
    let status = server
        .wait(limit.saturating_sub(terminated.elapsed()))
        .unwrap_or_else(|| {
            panic!(
                "no exit within the drain timeout of {DRAIN_TIMEOUT_SECS} s:\n{}",
                server.stderr_tail()
            )
        });
    println!(
        "drain: exited with {status}, {} ms after SIGTERM",
        terminated.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(0), "{}", server.stderr_tail());
    assert!(
        server.count_lines("log flushed and synced") > 0,
        "{}",
        server.stderr_tail()
    );

    let server = Server::start(dir, &["--fsync", "always"]);
    let mut client = server.client();
    for i in 0..requests {
        let found = get(&mut client, &format!("drain-{i:03}"));
        if i < succeeded.len() {
            assert_eq!(
                found.as_deref(),
                Some(format!("value-{i:03}").as_bytes()),
                "SET {i} was acknowledged: it survives the drain and the restart"
            );
        } else {
            assert_eq!(
                found, None,
                "SET {i} was above the GOAWAY's last id, so it was not processed"
            );
        }
    }
    println!(
        "sigterm_drains_in_flight_requests_and_exits_zero: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
