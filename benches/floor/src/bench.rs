//! raw-bench: the load for the floor and the afternoon server, in the shape of courier-bench's
//! driver. Each thread runs a `mio::Poll` over its share of the clients' connections; each
//! connection keeps `pipeline` requests outstanding as a batch: it writes a batch, waits
//! until every request of it is answered, then sends the next (as redis-benchmark -P and
//! courier-bench do by default). Keys `key:NNNNNNNNNN` are drawn uniformly from the keyspace
//! by a generator per client. Every answer's length and status byte are checked (a GET must
//! find its key: the servers are prefilled); each request's latency, from the write of its
//! batch's last byte to the read of its answer, goes into an HDR histogram in microseconds.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::wire::{self, Rng, Scanner, FOUND};

/// Bytes read from a socket at a time: 16 KiB.
const READ_BUFFER: usize = 16 * 1024;
/// Requests in flight per batch of the prefill: 256.
const PREFILL_BATCH: u64 = 256;
/// The longest a thread sleeps in its poll before it checks for a stalled run: 100 ms.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Largest latency the histogram holds, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What each request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// GET of a key (the server must have it).
    Get,
    /// SET of a key to a `value_size`-byte value.
    Set,
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server.
    pub addr: SocketAddr,
    /// Connections (at least 1).
    pub clients: usize,
    /// Requests each connection keeps outstanding, batch by batch (at least 1).
    pub pipeline: usize,
    /// Requests in all (0: none, e.g. a prefill only).
    pub requests: u64,
    /// What each request is.
    pub workload: Workload,
    /// Bytes of every value: SET's, and GET's answer's.
    pub value_size: usize,
    /// Keys are drawn from `0..keyspace` (at least 1).
    pub keyspace: u64,
    /// SET every key of the keyspace once before the run, pipelined on one connection.
    pub prefill: bool,
    /// Driver threads (at least 1, at most `clients`).
    pub threads: usize,
    /// The seed of the clients' key generators.
    pub seed: u64,
    /// How long a thread waits for an answer before its outstanding requests count as
    /// errors and it stops.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Requests completed: answered (checked, right or wrong) or lost with their connection.
    pub requests: u64,
    /// Seconds from the first request sent to the last answer.
    pub seconds: f64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Requests answered wrongly (length or status) or lost.
    pub errors: u64,
}

impl Report {
    /// `requests / seconds` (0 for an empty run).
    pub fn requests_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The report as one JSON object on one line: requests, seconds, requests_per_second,
    /// p50_ms, p99_ms, errors.
    pub fn json(&self) -> String {
        format!(
            "{{\"requests\":{},\"seconds\":{:.6},\"requests_per_second\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{}}}",
            self.requests,
            self.seconds,
            self.requests_per_second(),
            self.p50_ms,
            self.p99_ms,
            self.errors
        )
    }
}

/// Runs the prefill (if asked) and the load.
///
/// # Errors
/// Connecting; a prefill answer that is not a SET's; a poller that cannot be created.
pub fn run(config: &Config) -> io::Result<Report> {
    let value = vec![b'x'; config.value_size];
    if config.prefill {
        prefill(config.addr, config.keyspace, &value)?;
    }
    let threads = config.threads.clamp(1, config.clients.max(1));
    let mut shares: Vec<Vec<Client>> = (0..threads).map(|_| Vec::new()).collect();
    for index in 0..config.clients {
        let stream = std::net::TcpStream::connect(config.addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        shares[index % threads].push(Client::new(
            TcpStream::from_std(stream),
            Rng::for_client(config.seed, index),
        ));
    }
    let run = Run {
        config,
        value: &value,
        expected_len: match config.workload {
            Workload::Get => wire::get_answer_len(config.value_size),
            Workload::Set => wire::SET_ANSWER_LEN,
        },
        issued: AtomicU64::new(0),
    };
    let start = Instant::now();
    let tallies = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|clients| scope.spawn(|| drive(&run, clients)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a driver thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut total = Tally::new();
    let mut finished = start;
    for tally in tallies {
        let tally = tally?;
        total.histogram.add(&tally.histogram).expect("same bounds");
        total.requests += tally.requests;
        total.errors += tally.errors;
        finished = finished.max(tally.finished);
    }
    let ms = |q: f64| {
        if total.histogram.is_empty() {
            0.0
        } else {
            total.histogram.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Ok(Report {
        requests: total.requests,
        seconds: (finished - start).as_secs_f64(),
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        errors: total.errors,
    })
}

/// SETs every key of `0..keyspace` to `value` once, in batches of [`PREFILL_BATCH`] on one
/// blocking connection, and checks every answer.
///
/// # Errors
/// The socket's, or an answer that is not a SET's (`InvalidData`).
pub fn prefill(addr: SocketAddr, keyspace: u64, value: &[u8]) -> io::Result<()> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    let mut answer = [0; wire::HEADER_LEN + wire::SET_ANSWER_LEN];
    let want = {
        let mut want = Vec::new();
        wire::put_answer(&mut want, FOUND, &[]);
        want
    };
    let mut next = 0;
    while next < keyspace {
        let end = (next + PREFILL_BATCH).min(keyspace);
        out.clear();
        for k in next..end {
            wire::put_set(&mut out, &wire::key(k), value);
        }
        stream.write_all(&out)?;
        for _ in next..end {
            stream.read_exact(&mut answer)?;
            if answer[..] != want[..] {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("prefill: the answer to a SET began {answer:?}, not {want:?}"),
                ));
            }
        }
        next = end;
    }
    Ok(())
}

/// What the threads share.
struct Run<'a> {
    config: &'a Config,
    value: &'a [u8],
    /// The payload length every answer must have.
    expected_len: usize,
    /// Requests claimed so far (may run past `config.requests`).
    issued: AtomicU64,
}

impl Run<'_> {
    /// Claims up to `n` requests; how many.
    fn claim(&self, n: u64) -> u64 {
        let before = self.issued.fetch_add(n, Ordering::Relaxed);
        self.config.requests.saturating_sub(before).min(n)
    }
}

/// What one thread measured.
struct Tally {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    finished: Instant,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            requests: 0,
            errors: 0,
            finished: Instant::now(),
        }
    }
}

/// One connection and its client.
struct Client {
    stream: TcpStream,
    rng: Rng,
    scanner: Scanner,
    /// Requests queued and not yet written.
    out: Vec<u8>,
    /// Requests of the batch not yet answered.
    outstanding: u64,
    /// When the batch's last byte was written (when it was queued, until then).
    sent: Instant,
    /// Registered for WRITABLE too.
    writing: bool,
    done: bool,
}

/// Why a connection ended before its client was done.
struct Lost;

impl Client {
    fn new(stream: TcpStream, rng: Rng) -> Client {
        Client {
            stream,
            rng,
            scanner: Scanner::new(READ_BUFFER),
            out: Vec::new(),
            outstanding: 0,
            sent: Instant::now(),
            writing: false,
            done: false,
        }
    }

    /// Queues and writes the next batch; marks the client done when there is none.
    fn issue(&mut self, run: &Run<'_>, now: Instant) -> Result<(), Lost> {
        let n = run.claim(run.config.pipeline as u64);
        if n == 0 {
            self.done = true;
            return Ok(());
        }
        for _ in 0..n {
            let key = wire::key(self.rng.below(run.config.keyspace));
            match run.config.workload {
                Workload::Get => wire::put_get(&mut self.out, &key),
                Workload::Set => wire::put_set(&mut self.out, &key, run.value),
            }
        }
        self.outstanding = n;
        self.sent = now;
        self.flush(now)
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self, now: Instant) -> Result<(), Lost> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(Lost),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Lost),
            }
        }
        self.out.drain(..written);
        if self.out.is_empty() && written > 0 {
            self.sent = now;
        }
        Ok(())
    }

    /// Reads until the socket is drained and checks every answer.
    fn read(
        &mut self,
        run: &Run<'_>,
        now: Instant,
        read_closed: bool,
        tally: &mut Tally,
    ) -> Result<(), Lost> {
        loop {
            let spare = self.scanner.spare();
            let room = spare.len();
            let n = match self.stream.read(spare) {
                Ok(0) => return Err(Lost),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Lost),
            };
            let (outstanding, sent) = (&mut self.outstanding, self.sent);
            self.scanner.advance(n, |len, status| {
                if *outstanding == 0 {
                    // An answer to nothing: the stream cannot be trusted any further.
                    return Err(Lost);
                }
                *outstanding -= 1;
                tally.requests += 1;
                if len as usize != run.expected_len || status != Some(FOUND) {
                    tally.errors += 1;
                } else {
                    let micros = u64::try_from(now.saturating_duration_since(sent).as_micros())
                        .unwrap_or(u64::MAX);
                    tally.histogram.saturating_record(micros.max(1));
                }
                Ok(())
            })?;
            // A short read emptied the socket (as in courier-bench), unless the peer closed.
            if n < room && !read_closed {
                return Ok(());
            }
        }
    }

    fn interest(&self) -> Interest {
        if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }
}

/// One thread: drives `clients` until every request is issued and answered (or lost).
fn drive(run: &Run<'_>, mut clients: Vec<Client>) -> io::Result<Tally> {
    let mut tally = Tally::new();
    let mut poll = Poll::new()?;
    let now = Instant::now();
    let mut active = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let token = Token(i);
        let issued = client.issue(run, now);
        if client.done {
            continue;
        }
        let interest = client.interest();
        let registered = poll
            .registry()
            .register(&mut client.stream, token, interest)
            .is_ok();
        client.writing = !client.out.is_empty();
        if issued.is_err() || !registered {
            lose(client, &poll, &mut tally);
            continue;
        }
        active += 1;
    }
    let mut events = Events::with_capacity(1024);
    let mut last_progress = Instant::now();
    while active > 0 {
        if let Err(err) = poll.poll(&mut events, Some(MAX_SLEEP)) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let now = Instant::now();
        let before = tally.requests;
        for event in events.iter() {
            let Some(client) = clients.get_mut(event.token().0) else {
                continue;
            };
            if client.done {
                continue;
            }
            let closed = event.is_read_closed() || event.is_error();
            let mut result = client.flush(now);
            if result.is_ok() {
                result = client.read(run, now, closed, &mut tally);
            }
            if result.is_ok() && client.outstanding == 0 {
                result = client.issue(run, now);
            }
            if result.is_ok() && !client.done {
                let interest = client.interest();
                let wants_write = !client.out.is_empty();
                if wants_write != client.writing {
                    client.writing = wants_write;
                    if poll
                        .registry()
                        .reregister(&mut client.stream, event.token(), interest)
                        .is_err()
                    {
                        result = Err(Lost);
                    }
                }
            }
            match result {
                Err(Lost) => {
                    lose(client, &poll, &mut tally);
                    active -= 1;
                }
                Ok(()) if client.done => {
                    let _ = poll.registry().deregister(&mut client.stream);
                    active -= 1;
                }
                Ok(()) => {}
            }
        }
        if tally.requests > before {
            last_progress = now;
        } else if now - last_progress >= run.config.timeout {
            for client in clients.iter_mut().filter(|c| !c.done) {
                lose(client, &poll, &mut tally);
            }
            break;
        }
    }
    tally.finished = Instant::now();
    Ok(tally)
}

/// The client's connection failed: its outstanding requests are errors, and it stops.
fn lose(client: &mut Client, poll: &Poll, tally: &mut Tally) {
    tally.requests += client.outstanding;
    tally.errors += client.outstanding;
    client.outstanding = 0;
    client.done = true;
    let _ = poll.registry().deregister(&mut client.stream);
}
