//! The driver: each thread runs a `mio::Poll` over its clients' connections, as
//! memtier_benchmark and redis-benchmark do. Every client keeps its own requests outstanding
//! (`--pipeline`, in batches or as a window), writes when a socket takes bytes, reads and
//! decodes when bytes arrive, and sends its next requests as soon as its own responses are
//! in, so a slow or silent connection holds up no other client. With several servers a
//! client has a connection to each, and sends each kv request to the server that owns its
//! key ([`Rendezvous`]), each echo to the next server in turn (memtier_benchmark's cluster
//! mode). Before the clock starts, [`connect_all`] brings every connection up from one poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_rpc::client::balance::Rendezvous;
use mio::{Events, Poll, Token};

use crate::args::Server;
use crate::conn::{Conn, ConnError, Security};
use crate::report::Tally;
use crate::workload::{Plan, Request, Rng};

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
    /// Where to connect: every client has a connection to each, in this order.
    pub servers: Vec<Server>,
    /// Which server owns a key: the servers' names, in the same order.
    pub shards: Rendezvous,
    /// TLS and token of every connection.
    pub security: Security,
    /// What each request is.
    pub plan: Plan,
    /// Requests each client keeps outstanding, over all its connections.
    pub pipeline: usize,
    /// Keep `pipeline` outstanding at all times instead of batch by batch (`--window`).
    pub window: bool,
    /// The run's seed, from which every client's key generator starts.
    pub seed: u64,
    /// Requests per connection (`--reconnect`; one server only).
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

/// One connection of a client, to one server: replaced when it fails, or after
/// `--reconnect` requests.
#[derive(Debug)]
struct Link {
    conn: Option<Conn>,
    /// With `--reconnect`: requests claimed for the connection and not yet sent.
    left: u64,
    /// Connection failures since the last answer on it.
    failures: u32,
    retry_at: Instant,
    /// The connection has been counted in `connections` (or was opened before the run).
    counted: bool,
}

/// One client: a connection to each server (in the order of [`Shared::servers`]), its key
/// generator, and the server of its next echo. It sends only while every one of its
/// connections takes requests: a request waits for the server that owns its key, it never
/// goes to another one.
#[derive(Debug)]
pub struct Slot {
    links: Vec<Link>,
    rng: Rng,
    /// The server of the next echo (round robin).
    next_echo: usize,
    /// No more requests to send and nothing outstanding: the client is done.
    finished: bool,
    /// Given up: a connection failed too often, or its server stopped answering. It sends
    /// nothing more, and is done once its other connections have their answers.
    retired: bool,
}

impl Slot {
    /// Client `index` with its ready connections `conns`, one to each server, opened before
    /// the run.
    pub fn new(shared: &Shared, index: usize, conns: Vec<Conn>) -> Slot {
        let now = Instant::now();
        let links = conns
            .into_iter()
            .map(|conn| Link {
                conn: Some(conn),
                left: shared.per_connection.map_or(0, |n| shared.claim_up_to(n)),
                failures: 0,
                retry_at: now,
                counted: true,
            })
            .collect();
        Slot {
            links,
            rng: Rng::for_client(shared.seed, index),
            next_echo: 0,
            finished: false,
            retired: false,
        }
    }

    fn idle(&self) -> bool {
        self.finished
    }

    /// The server `request` goes to: the owner of its key, or for an echo the next server
    /// in turn.
    fn server_of(&mut self, request: &Request, shards: &Rendezvous) -> usize {
        let n = self.links.len();
        if n == 1 {
            return 0;
        }
        match request.key() {
            Some(key) => shards.owner(key),
            None => {
                let s = self.next_echo;
                self.next_echo = (s + 1) % n;
                s
            }
        }
    }

    /// Requests outstanding over all its connections.
    fn outstanding(&self) -> usize {
        self.links
            .iter()
            .filter_map(|l| l.conn.as_ref())
            .map(Conn::outstanding)
            .sum()
    }
}

/// Opens `clients` connections to each of `shared.servers` from one poll and waits until
/// each is ready (connected, TLS, AUTH); each may wait up to the connect timeout for the
/// server's next byte. Returns each client's connections, in the order of the servers.
///
/// # Errors
/// The first connection that fails, or a timeout, with the name of its server.
pub fn connect_all(shared: &Shared, clients: usize) -> Result<Vec<Vec<Conn>>, (ConnError, String)> {
    let n = shared.servers.len();
    let name = |i: usize| shared.servers[i % n].name.clone();
    let mut poll = Poll::new().map_err(|e| (ConnError::new("io", e.to_string()), name(0)))?;
    let mut conns = Vec::with_capacity(clients * n);
    for i in 0..clients * n {
        let mut conn = Conn::open(shared.servers[i % n].addr, &shared.security)
            .map_err(|err| (err, name(i)))?;
        conn.register(poll.registry(), Token(i))
            .map_err(|e| (ConnError::new("io", e.to_string()), name(i)))?;
        conns.push(conn);
    }
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0; READ_CHUNK];
    while let Some(waiting) = conns.iter().position(|c| !c.is_ready()) {
        let now = Instant::now();
        // Each connection has the connect timeout from its last progress.
        let deadline = conns
            .iter()
            .filter_map(Conn::waiting_since)
            .min()
            .map_or(now, |since| since + shared.connect_timeout);
        if now >= deadline {
            return Err((ConnError::new("timeout", "timed out"), name(waiting)));
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((ConnError::new("io", e.to_string()), name(waiting))),
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(conn) = conns.get_mut(i) else {
                continue;
            };
            let closed = event.is_read_closed() || event.is_error();
            conn.on_ready(Instant::now(), closed, &mut scratch, &mut |_, _| {})
                .map_err(|err| (err, name(i)))?;
            conn.update_interest(poll.registry(), event.token())
                .map_err(|e| (ConnError::new("io", e.to_string()), name(i)))?;
        }
    }
    for conn in &mut conns {
        conn.deregister(poll.registry());
    }
    let mut clients_conns = Vec::with_capacity(clients);
    let mut rest = conns.into_iter();
    for _ in 0..clients {
        clients_conns.push(rest.by_ref().take(n).collect());
    }
    Ok(clients_conns)
}

/// One thread: drives `slots` until the run has issued all it should and every response
/// is in (or its client given up). Client `i`'s connection to server `s` has the token
/// `i * servers + s`.
pub fn drive(shared: &Shared, mut slots: Vec<Slot>) -> Tally {
    let n = shared.servers.len();
    let mut tally = Tally::new(n);
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(err) => {
            log::error!("cannot create a poll: {err}");
            tally.clients_lost += slots.len() as u64;
            return tally;
        }
    };
    for (i, slot) in slots.iter_mut().enumerate() {
        for s in 0..n {
            if let Some(conn) = slot.links[s].conn.as_mut() {
                if let Err(err) = conn.register(poll.registry(), Token(i * n + s)) {
                    let err = ConnError::new("io", err.to_string());
                    lose(shared, slot, s, &poll, &mut tally, &err, Instant::now());
                }
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
                tend(shared, slot, i * n, &poll, &mut tally, now, &mut sweep_at);
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
            let (i, s) = (event.token().0 / n, event.token().0 % n);
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Some(conn) = slot.links[s].conn.as_mut() else {
                continue;
            };
            let before = tally.requests;
            let closed = event.is_read_closed() || event.is_error();
            let result = conn.on_ready(now, closed, &mut scratch, &mut |answer, latency| {
                tally.record(answer, latency)
            });
            let answered = tally.requests - before;
            if answered > 0 {
                slot.links[s].failures = 0;
                tally.per_server[s] += answered;
                shared.done.fetch_add(answered, Ordering::Relaxed);
            }
            if let Err(err) = result {
                lose(shared, slot, s, &poll, &mut tally, &err, now);
            }
            // Its next requests go out now, as its own answers came in.
            let was_idle = slot.idle();
            tend(shared, slot, i * n, &poll, &mut tally, now, &mut sweep_at);
            if !was_idle && slot.idle() {
                active -= 1;
            }
        }
    }
    tally.finished = Instant::now();
    tally
}

/// Sends what the client has room for, each request on the connection to its server, and
/// writes it; nothing unless every one of its connections takes requests. On error, the
/// server whose connection failed.
fn issue(shared: &Shared, slot: &mut Slot, now: Instant) -> Result<(), (usize, ConnError)> {
    let all_accept = slot
        .links
        .iter()
        .all(|l| l.conn.as_ref().is_some_and(Conn::accepts));
    if slot.retired || !all_accept {
        return Ok(());
    }
    let room = match (shared.window, slot.outstanding()) {
        (true, n) => shared.pipeline.saturating_sub(n),
        (false, 0) => shared.pipeline,
        (false, _) => 0,
    };
    let mut queued = 0;
    for _ in 0..room {
        let allowed = match shared.per_connection {
            // One server only (checked with the flags).
            Some(_) => {
                let link = &mut slot.links[0];
                link.left > 0 && shared.end.is_none_or(|end| now < end) && {
                    link.left -= 1;
                    true
                }
            }
            None => shared.claim(),
        };
        if !allowed {
            break;
        }
        let request = shared.plan.next(&mut slot.rng);
        let s = slot.server_of(&request, &shared.shards);
        if let Some(conn) = slot.links[s].conn.as_mut() {
            conn.queue(&shared.plan, &request, now)
                .map_err(|err| (s, err))?;
        }
        queued += 1;
    }
    if queued > 0 {
        for (s, link) in slot.links.iter_mut().enumerate() {
            if let Some(conn) = link.conn.as_mut() {
                conn.flush(now).map_err(|err| (s, err))?;
            }
        }
    }
    Ok(())
}

fn reinterest(slot: &mut Slot, poll: &Poll, base: usize) -> Result<(), (usize, ConnError)> {
    for (s, link) in slot.links.iter_mut().enumerate() {
        if let Some(conn) = link.conn.as_mut() {
            conn.update_interest(poll.registry(), Token(base + s))
                .map_err(|e| (s, ConnError::new("io", e.to_string())))?;
        }
    }
    Ok(())
}

/// The periodic care of one client, whose connections have the tokens from `base` on: each
/// connection's deadline, the end of its share (`--reconnect`) or of a drained one (GOAWAY),
/// opening the next connection; then topping up its requests, and closing what it no longer
/// needs at the end. Lowers `wake` to the client's next deadline.
fn tend(
    shared: &Shared,
    slot: &mut Slot,
    base: usize,
    poll: &Poll,
    tally: &mut Tally,
    now: Instant,
    wake: &mut Instant,
) {
    if slot.idle() {
        return;
    }
    let over = shared.end.is_some_and(|end| now >= end);
    for s in 0..slot.links.len() {
        let link = &mut slot.links[s];
        if over {
            // A timed run is over: no connection's share is sent any further.
            link.left = 0;
        }
        if let Some(conn) = link.conn.as_mut() {
            let mut timed_out = None;
            if let Some(since) = conn.waiting_since() {
                let limit = if conn.is_ready() {
                    shared.timeout
                } else {
                    shared.connect_timeout
                };
                let deadline = since + limit;
                if now >= deadline {
                    timed_out = Some(limit);
                } else {
                    *wake = (*wake).min(deadline);
                }
            }
            if let Some(limit) = timed_out {
                let err = ConnError::new(
                    "timeout",
                    format!("no answer for {:.1} s", limit.as_secs_f64()),
                );
                lose(shared, slot, s, poll, tally, &err, now);
                continue;
            }
            if conn.is_ready() && !link.counted {
                link.counted = true;
                tally.connections += 1;
            }
            let share_done = shared.per_connection.is_some() && link.left == 0;
            if conn.outstanding() == 0 && (conn.drained() || share_done && conn.is_ready()) {
                // Done with this connection: its share is sent and answered, or the server
                // drained it (GOAWAY). The next one, if any, opens below.
                close(link, poll);
            }
        }
        if link.conn.is_some() || slot.retired {
            continue;
        }
        if let Some(n) = shared.per_connection {
            if link.left == 0 {
                link.left = shared.claim_up_to(n);
            }
            if link.left == 0 {
                // One server only: the client is done.
                slot.finished = true;
                return;
            }
        } else if !shared.open() {
            continue;
        }
        if now < link.retry_at {
            *wake = (*wake).min(link.retry_at);
            continue;
        }
        match Conn::open(shared.servers[s].addr, &shared.security) {
            Ok(mut conn) => {
                let registered = conn.register(poll.registry(), Token(base + s));
                link.conn = Some(conn);
                link.counted = false;
                if let Err(err) = registered {
                    let err = ConnError::new("io", err.to_string());
                    lose(shared, slot, s, poll, tally, &err, now);
                }
            }
            Err(err) => {
                tally.connect_failures += 1;
                log::debug!(
                    "connect to {} failed: {}",
                    shared.servers[s].name,
                    err.message
                );
                fail_again(slot, s, tally, now);
            }
        }
    }
    let result = issue(shared, slot, now).and_then(|()| reinterest(slot, poll, base));
    if let Err((s, err)) = result {
        lose(shared, slot, s, poll, tally, &err, now);
    }
    if slot.retired || (shared.per_connection.is_none() && !shared.open()) {
        // Nothing more to send: each connection closes once its answers are in.
        for link in &mut slot.links {
            if link.conn.as_ref().is_some_and(|c| c.outstanding() == 0) {
                close(link, poll);
            }
        }
        if slot.links.iter().all(|l| l.conn.is_none()) {
            slot.finished = true;
        }
    }
}

/// Deregisters and closes the link's connection.
fn close(link: &mut Link, poll: &Poll) {
    if let Some(mut conn) = link.conn.take() {
        conn.deregister(poll.registry());
        conn.close();
    }
}

/// The client's connection to server `s` failed with `err`: its outstanding requests count
/// as errors of that kind, the connection is dropped, and the client either opens it again
/// later or, when that server stopped answering (a timeout) or the connection has failed too
/// often, gives up.
fn lose(
    shared: &Shared,
    slot: &mut Slot,
    s: usize,
    poll: &Poll,
    tally: &mut Tally,
    err: &ConnError,
    now: Instant,
) {
    let link = &mut slot.links[s];
    let Some(conn) = link.conn.as_ref() else {
        return;
    };
    let lost = conn.outstanding() as u64;
    let was_ready = conn.is_ready();
    tally.lose(err.kind, lost);
    tally.per_server[s] += lost;
    shared.done.fetch_add(lost, Ordering::Relaxed);
    log::debug!(
        "connection to {} lost ({}): {}",
        shared.servers[s].name,
        err.kind,
        err.message
    );
    close(link, poll);
    if !was_ready {
        tally.connect_failures += 1;
    }
    if err.kind == "timeout" && was_ready {
        // The server stopped answering: a lost client, not one to reconnect.
        give_up(slot, tally);
        return;
    }
    fail_again(slot, s, tally, now);
}

/// Counts one more failure in a row of the connection to server `s`; past the limit the
/// client gives up.
fn fail_again(slot: &mut Slot, s: usize, tally: &mut Tally, now: Instant) {
    let link = &mut slot.links[s];
    link.failures += 1;
    if link.failures > MAX_RECONNECTS {
        give_up(slot, tally);
    } else {
        link.retry_at = now + RETRY_STEP * link.failures;
    }
}

/// The client gives up (counted once).
fn give_up(slot: &mut Slot, tally: &mut Tally) {
    if !slot.retired {
        slot.retired = true;
        tally.clients_lost += 1;
    }
}
