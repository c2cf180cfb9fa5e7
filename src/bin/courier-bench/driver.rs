//! The driver: each thread runs a `mio::Poll` over its connections, as memtier_benchmark and
//! redis-benchmark do. Every connection keeps its own requests outstanding (`--pipeline`,
//! in batches or as a window), writes when the socket takes bytes, reads and decodes when
//! bytes arrive, and sends its next requests as soon as its own responses are in, so a slow
//! or silent connection holds up no other one. Before the clock starts, [`connect_all`]
//! brings every connection up from one poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::conn::{Conn, ConnError, Security};
use crate::report::Tally;
use crate::workload::{Plan, Rng};

/// Consecutive connection failures (no answer in between) after which a client gives up.
pub const MAX_RECONNECTS: u32 = 5;
/// The longest a thread sleeps in its poll: it wakes at least this often to check the run's
/// end and its connections' deadlines.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// First pause before a failed connection is opened again; the n-th failure in a row waits
/// n times as long.
const RETRY_STEP: Duration = Duration::from_millis(100);

/// What the threads share: the plan and the live counters.
#[derive(Debug)]
pub struct Shared {
    /// Where to connect.
    pub addr: std::net::SocketAddr,
    /// TLS and token of every connection.
    pub security: Security,
    /// What each request is.
    pub plan: Plan,
    /// Requests each connection keeps outstanding.
    pub pipeline: usize,
    /// Keep `pipeline` outstanding at all times instead of batch by batch (`--window`).
    pub window: bool,
    /// The run's seed, from which every client's key generator starts.
    pub seed: u64,
    /// Requests per connection (`--reconnect`).
    pub per_connection: Option<u64>,
    /// Total requests to issue, when the run is not timed.
    pub total: u64,
    /// When a timed run stops issuing.
    pub end: Option<Instant>,
    /// How long a ready connection may wait for an answer (`--timeout`).
    pub timeout: Duration,
    /// How long a new connection may wait for the server's next byte until it is ready
    /// (connect, TLS, AUTH).
    pub connect_timeout: Duration,
    /// Requests claimed so far (may run past `total`).
    pub issued: AtomicU64,
    /// Requests completed so far, for the progress line.
    pub done: AtomicU64,
}

impl Shared {
    /// Claims one request to send; false when the run has issued all it should.
    fn claim(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.issued.fetch_add(1, Ordering::Relaxed) < self.total,
        }
    }

    /// Claims up to `n` requests at once (a `--reconnect` connection's share); how many.
    fn claim_up_to(&self, n: u64) -> u64 {
        match self.end {
            Some(end) => {
                if Instant::now() < end {
                    n
                } else {
                    0
                }
            }
            None => {
                let before = self.issued.fetch_add(n, Ordering::Relaxed);
                self.total.saturating_sub(before).min(n)
            }
        }
    }

    /// Whether more requests may still be issued.
    fn open(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self.issued.load(Ordering::Relaxed) < self.total,
        }
    }
}

/// One client: its connection (replaced when it fails, or after `--reconnect` requests),
/// its key generator, and its retry state.
#[derive(Debug)]
pub struct Slot {
    conn: Option<Conn>,
    rng: Rng,
    /// With `--reconnect`: requests claimed for the connection and not yet sent.
    left: u64,
    /// Connection failures since the last answer.
    failures: u32,
    retry_at: Instant,
    /// The connection has been counted in `connections` (or was opened before the run).
    counted: bool,
    /// No more requests to send and nothing outstanding: the client is done.
    finished: bool,
    /// Given up: failed too often, or its server stopped answering.
    retired: bool,
}

impl Slot {
    /// Client `index` with its ready connection `conn`, opened before the run.
    pub fn new(shared: &Shared, index: usize, conn: Conn) -> Slot {
        Slot {
            conn: Some(conn),
            rng: Rng::for_client(shared.seed, index),
            left: shared.per_connection.map_or(0, |n| shared.claim_up_to(n)),
            failures: 0,
            retry_at: Instant::now(),
            counted: true,
            finished: false,
            retired: false,
        }
    }

    fn idle(&self) -> bool {
        self.retired || self.finished
    }
}

/// Opens `count` connections to `shared.addr` from one poll and waits until each is ready
/// (connected, TLS, AUTH); each may wait up to the connect timeout for the server's next
/// byte.
///
/// # Errors
/// The first connection that fails, or a timeout.
pub fn connect_all(shared: &Shared, count: usize) -> Result<Vec<Conn>, ConnError> {
    let mut poll = Poll::new().map_err(|e| ConnError::new("io", e.to_string()))?;
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let mut conn = Conn::open(shared.addr, &shared.security)?;
        conn.register(poll.registry(), Token(i))
            .map_err(|e| ConnError::new("io", e.to_string()))?;
        conns.push(conn);
    }
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0; READ_CHUNK];
    while !conns.iter().all(Conn::is_ready) {
        let now = Instant::now();
        // Each connection has the connect timeout from its last progress.
        let deadline = conns
            .iter()
            .filter_map(Conn::waiting_since)
            .min()
            .map_or(now, |since| since + shared.connect_timeout);
        if now >= deadline {
            return Err(ConnError::new("timeout", "timed out"));
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConnError::new("io", e.to_string())),
        }
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            let closed = event.is_read_closed() || event.is_error();
            conn.on_ready(Instant::now(), closed, &mut scratch, &mut |_, _| {})?;
            conn.update_interest(poll.registry(), event.token())
                .map_err(|e| ConnError::new("io", e.to_string()))?;
        }
    }
    for conn in &mut conns {
        conn.deregister(poll.registry());
    }
    Ok(conns)
}

/// One thread: drives `slots` until the run has issued all it should and every response
/// is in (or its client given up).
pub fn drive(shared: &Shared, mut slots: Vec<Slot>) -> Tally {
    let mut tally = Tally::new();
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(err) => {
            log::error!("cannot create a poll: {err}");
            tally.clients_lost += slots.len() as u64;
            return tally;
        }
    };
    for (i, slot) in slots.iter_mut().enumerate() {
        if let Some(conn) = slot.conn.as_mut() {
            if let Err(err) = conn.register(poll.registry(), Token(i)) {
                let err = ConnError::new("io", err.to_string());
                lose(shared, slot, &poll, &mut tally, &err, Instant::now());
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0; READ_CHUNK];
    // Every client is tended at a sweep (deadlines, reconnects, the end of the run), at most
    // MAX_SLEEP apart or at the earliest deadline a client asked for; in between only the
    // clients that had an event are, so a wakeup costs what its events cost, not a pass
    // over every connection.
    let mut sweep_at = Instant::now();
    let mut active = slots.len();
    loop {
        let now = Instant::now();
        if now >= sweep_at {
            sweep_at = now + MAX_SLEEP;
            active = 0;
            for (i, slot) in slots.iter_mut().enumerate() {
                tend(
                    shared,
                    slot,
                    Token(i),
                    &poll,
                    &mut tally,
                    now,
                    &mut sweep_at,
                );
                active += usize::from(!slot.idle());
            }
        }
        if active == 0 {
            break;
        }
        match poll.poll(&mut events, Some(sweep_at.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log::error!("poll failed: {err}");
                tally.clients_lost += slots.iter().filter(|s| !s.idle()).count() as u64;
                break;
            }
        }
        let now = Instant::now();
        for event in events.iter() {
            let token = event.token();
            let Some(slot) = slots.get_mut(token.0) else {
                continue;
            };
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            let before = tally.requests;
            let closed = event.is_read_closed() || event.is_error();
            let result = conn.on_ready(now, closed, &mut scratch, &mut |answer, latency| {
                tally.record(answer, latency)
            });
            let answered = tally.requests - before;
            if answered > 0 {
                slot.failures = 0;
                shared.done.fetch_add(answered, Ordering::Relaxed);
            }
            if let Err(err) = result {
                lose(shared, slot, &poll, &mut tally, &err, now);
            }
            // Its next requests go out now, as its own answers came in.
            let was_idle = slot.idle();
            tend(shared, slot, token, &poll, &mut tally, now, &mut sweep_at);
            if !was_idle && slot.idle() {
                active -= 1;
            }
        }
    }
    tally.finished = Instant::now();
    tally
}

/// Sends what the slot's connection has room for, and writes it.
fn issue(shared: &Shared, slot: &mut Slot, now: Instant) -> Result<(), ConnError> {
    let Some(conn) = slot.conn.as_mut() else {
        return Ok(());
    };
    let room = conn.room(shared.pipeline, shared.window);
    if room == 0 {
        return Ok(());
    }
    let mut queued = 0;
    for _ in 0..room {
        let allowed = match shared.per_connection {
            Some(_) => {
                slot.left > 0 && shared.end.is_none_or(|end| now < end) && {
                    slot.left -= 1;
                    true
                }
            }
            None => shared.claim(),
        };
        if !allowed {
            break;
        }
        conn.queue(&shared.plan, &mut slot.rng, now)?;
        queued += 1;
    }
    if queued > 0 {
        conn.flush(now)?;
    }
    Ok(())
}

fn reinterest(slot: &mut Slot, poll: &Poll, token: Token) -> Result<(), ConnError> {
    match slot.conn.as_mut() {
        Some(conn) => conn
            .update_interest(poll.registry(), token)
            .map_err(|e| ConnError::new("io", e.to_string())),
        None => Ok(()),
    }
}

/// The periodic care of one client: its deadline, the end of its connection's share
/// (`--reconnect`) or of a drained one (GOAWAY), opening the next connection, and topping
/// up its requests. Lowers `wake` to the client's next deadline.
fn tend(
    shared: &Shared,
    slot: &mut Slot,
    token: Token,
    poll: &Poll,
    tally: &mut Tally,
    now: Instant,
    wake: &mut Instant,
) {
    if slot.idle() {
        return;
    }
    if shared.end.is_some_and(|end| now >= end) {
        // A timed run is over: no connection's share is sent any further.
        slot.left = 0;
    }
    if let Some(conn) = slot.conn.as_mut() {
        if let Some(since) = conn.waiting_since() {
            let limit = if conn.is_ready() {
                shared.timeout
            } else {
                shared.connect_timeout
            };
            let deadline = since + limit;
            if now >= deadline {
                let err = ConnError::new(
                    "timeout",
                    format!("no answer for {:.1} s", limit.as_secs_f64()),
                );
                lose(shared, slot, poll, tally, &err, now);
                return;
            }
            *wake = (*wake).min(deadline);
        }
        if conn.is_ready() && !slot.counted {
            slot.counted = true;
            tally.connections += 1;
        }
        let share_done = shared.per_connection.is_some() && slot.left == 0;
        if conn.outstanding() == 0 && (conn.drained() || share_done && conn.is_ready()) {
            // Done with this connection: its share is sent and answered, or the server
            // drained it (GOAWAY). The next one, if any, opens below.
            close(slot, poll);
        }
    }
    if slot.conn.is_none() {
        if let Some(n) = shared.per_connection {
            if slot.left == 0 {
                slot.left = shared.claim_up_to(n);
            }
            if slot.left == 0 {
                slot.finished = true;
                return;
            }
        } else if !shared.open() {
            slot.finished = true;
            return;
        }
        if now < slot.retry_at {
            *wake = (*wake).min(slot.retry_at);
            return;
        }
        match Conn::open(shared.addr, &shared.security) {
            Ok(mut conn) => match conn.register(poll.registry(), token) {
                Ok(()) => {
                    slot.conn = Some(conn);
                    slot.counted = false;
                }
                Err(err) => {
                    let err = ConnError::new("io", err.to_string());
                    slot.conn = Some(conn);
                    lose(shared, slot, poll, tally, &err, now);
                }
            },
            Err(err) => {
                tally.connect_failures += 1;
                fail_again(slot, tally, now);
                log::debug!("connect failed: {}", err.message);
            }
        }
        return;
    }
    let result = issue(shared, slot, now).and_then(|()| reinterest(slot, poll, token));
    if let Err(err) = result {
        lose(shared, slot, poll, tally, &err, now);
    } else if shared.per_connection.is_none()
        && !shared.open()
        && slot.conn.as_ref().is_some_and(|c| c.outstanding() == 0)
    {
        // Nothing outstanding and nothing more to send.
        close(slot, poll);
        slot.finished = true;
    }
}

/// Deregisters and closes the slot's connection.
fn close(slot: &mut Slot, poll: &Poll) {
    if let Some(mut conn) = slot.conn.take() {
        conn.deregister(poll.registry());
        conn.close();
    }
}

/// The slot's connection failed with `err`: its outstanding requests count as errors of
/// that kind, the connection is dropped, and the client either tries again later or, when
/// its server stopped answering (a timeout) or it has failed too often, gives up.
fn lose(
    shared: &Shared,
    slot: &mut Slot,
    poll: &Poll,
    tally: &mut Tally,
    err: &ConnError,
    now: Instant,
) {
    let Some(conn) = slot.conn.as_ref() else {
        return;
    };
    let lost = conn.outstanding() as u64;
    let was_ready = conn.is_ready();
    tally.lose(err.kind, lost);
    shared.done.fetch_add(lost, Ordering::Relaxed);
    log::debug!("connection lost ({}): {}", err.kind, err.message);
    close(slot, poll);
    if !was_ready {
        tally.connect_failures += 1;
    }
    if err.kind == "timeout" && was_ready {
        // The server stopped answering: a lost client, not one to reconnect.
        slot.retired = true;
        tally.clients_lost += 1;
        return;
    }
    fail_again(slot, tally, now);
}

/// Counts one more failure in a row; past the limit the client gives up.
fn fail_again(slot: &mut Slot, tally: &mut Tally, now: Instant) {
    slot.failures += 1;
    if slot.failures > MAX_RECONNECTS {
        slot.retired = true;
        tally.clients_lost += 1;
    } else {
        slot.retry_at = now + RETRY_STEP * slot.failures;
    }
}
