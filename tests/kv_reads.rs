//! What a kv reader is shown, over real sockets, in process: no GET answer shows a write
//! before the log has made it as safe as an acknowledgement (written under `everysec` and
//! `never`, written and synced under `always`), on whichever event loop the GET runs; a GET
//! pipelined after a SET on the same connection sees it. The log's commit is slowed down
//! (200 ms before each) so that a GET sent while a SET waits for its commit would be answered
//! first if it did not wait too.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::kv::log::{FsyncPolicy, Log};
use courier_rpc::kv::{self, Key, SetRequest};
use courier_rpc::proto::Status;
use courier_rpc::server::Server;
use courier_rpc::service::{Commit, Router};
use support::{start, TempDir};

/// The log's own commit, 200 ms late, counted.
struct SlowCommit(Arc<Log>, AtomicU64);

impl Commit for SlowCommit {
    fn commit(&self, ticket: u64) -> Result<(), Status> {
        self.1.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(200));
        self.0.commit(ticket)
    }
}

fn set(key: &'static [u8], value: &'static [u8]) -> SetRequest {
    SetRequest {
        key: Bytes::from_static(key),
        value: Bytes::from_static(value),
    }
}

/// Waits until the server has applied a write that waits for its commit (its record is
/// appended, not yet written); returns where the log's records then end.
fn applied(log: &Log) -> u64 {
    loop {
        let stats = log.stats();
        if stats.appended > stats.written {
            return stats.appended;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Runs the readers' checks under `fsync`: the log's end that a reader may be shown must
/// cover everything appended when a GET that shows a new write returns.
fn reads_wait_for_the_commit(fsync: FsyncPolicy) {
    let dir = TempDir::new("kv-reads");
    let (store, log) = support::open_kv_log(dir.path(), fsync);
    let mut router = Router::new();
    kv::register_logged(&mut router, Arc::clone(&store), Arc::clone(&log));
    let commit = Arc::new(SlowCommit(Arc::clone(&log), AtomicU64::new(0)));
    router.set_commit(Arc::clone(&commit) as Arc<dyn Commit>);
    // Two loops: the writer's connection goes to the first, the reader's to the second.
    let server = start(Server::builder().loops(2), router);
    let addr = server.local_addr();
    let mut writer = Client::connect(addr).expect("connect the writer");
    let mut reader = Client::connect(addr).expect("connect the reader");
    let safe = |log: &Log| {
        let stats = log.stats();
        match fsync {
            FsyncPolicy::Always => stats.synced,
            _ => stats.written,
        }
    };

    // Another loop: the SET is applied at once and waits 200 ms for its commit; a GET sent
    // meanwhile on the other loop must not be answered before that commit.
    let pending = writer.send(&kv::SET, &set(b"k", b"v1")).expect("send SET");
    writer.flush().expect("flush");
    let appended = applied(&log);
    let sent = Instant::now();
    let value = reader
        .call(&kv::GET, &Key(Bytes::from_static(b"k")))
        .expect("GET");
    assert_eq!(&value.0[..], b"v1", "{fsync}: the GET sees the SET");
    assert!(
        safe(&log) >= appended,
        "{fsync}: the GET showed a write the log had not yet made safe (safe to {}, the write \
         ends at {appended}); answered after {:?}",
        safe(&log),
        sent.elapsed()
    );
    writer.wait(pending).expect("the SET's answer");

    // The same connection: a GET pipelined after a SET sees it, after its commit.
    let set_pending = writer.send(&kv::SET, &set(b"k", b"v2")).expect("send SET");
    let get_pending = writer
        .send(&kv::GET, &Key(Bytes::from_static(b"k")))
        .expect("send GET");
    let value = writer.wait(get_pending).expect("GET");
    assert_eq!(
        &value.0[..],
        b"v2",
        "{fsync}: a pipelined GET sees the SET before it"
    );
    let appended = log.stats().appended;
    assert!(safe(&log) >= appended, "{fsync}: answered after the commit");
    writer.wait(set_pending).expect("SET");

    // A read of a key whose writes are all safe is not held: it runs no commit.
    let commits = commit.1.load(Ordering::SeqCst);
    reader
        .call(&kv::GET, &Key(Bytes::from_static(b"k")))
        .expect("GET");
    assert_eq!(
        commit.1.load(Ordering::SeqCst),
        commits,
        "{fsync}: a GET with nothing to wait for waited for a commit"
    );

    // A DELETE that finds nothing, after a DELETE on the other loop that is not yet
    // committed, waits too: its "absent" shows the first DELETE.
    let deleting = writer
        .send(&kv::DELETE, &Key(Bytes::from_static(b"k")))
        .expect("send DELETE");
    writer.flush().expect("flush");
    let appended = applied(&log);
    let deleted = reader
        .call(&kv::DELETE, &Key(Bytes::from_static(b"k")))
        .expect("DELETE");
    assert!(!deleted.0, "{fsync}: already deleted by the writer");
    assert!(safe(&log) >= appended, "{fsync}: answered after the commit");
    assert!(writer.wait(deleting).expect("DELETE").0);
    drop(server);
    log.close().expect("close the log");
}

#[test]
fn under_always_no_answer_shows_a_write_before_it_is_synced() {
    reads_wait_for_the_commit(FsyncPolicy::Always);
}

#[test]
fn under_everysec_no_answer_shows_a_write_before_it_is_written() {
    reads_wait_for_the_commit(FsyncPolicy::EverySec);
}

#[test]
fn under_never_no_answer_shows_a_write_before_it_is_written() {
    reads_wait_for_the_commit(FsyncPolicy::Never);
}

#[test]
fn reads_held_for_a_commit_stay_under_the_output_high_water_mark() {
    // A SET of a 1 MiB value, then 40 GETs of it in the same write: every GET shows the SET,
    // so each waits for its commit. Held answers count toward the 1 MiB high-water mark, so
    // decoding pauses after about one of them instead of holding 40 MiB (over the 32 MiB
    // hard cap, which would close the connection with nothing answered).
    let dir = TempDir::new("kv-reads-held");
    let (store, log) = support::open_kv_log(dir.path(), FsyncPolicy::Always);
    let mut router = Router::new();
    kv::register_logged(&mut router, Arc::clone(&store), Arc::clone(&log));
    let server = start(Server::builder(), router);
    let addr = server.local_addr();
    let mut client = Client::connect(addr).expect("connect");
    let value = Bytes::from(vec![0x5A; 1024 * 1024]);
    let set_pending = client
        .send(
            &kv::SET,
            &SetRequest {
                key: Bytes::from_static(b"big"),
                value: value.clone(),
            },
        )
        .expect("send SET");
    let gets: Vec<_> = (0..40)
        .map(|_| {
            client
                .send(&kv::GET, &Key(Bytes::from_static(b"big")))
                .expect("send GET")
        })
        .collect();
    client.wait(set_pending).expect("the SET is answered");
    for get in gets {
        assert_eq!(client.wait(get).expect("every GET is answered").0, value);
    }
    let report = support::stats(addr);
    assert_eq!(report.value("closed_output_cap"), 0, "{report:?}");
    assert!(
        report.value("output_peak") < 4 * 1024 * 1024,
        "output stayed near the high-water mark: {report:?}"
    );
    drop(server);
    log.close().expect("close the log");
}
