//! One connection of the async client: a [`ClientCore`] shared by the calls made on it, and
//! the task that drives its socket.
//!
//! The core and the wakers of the calls waiting on it sit behind one `std::sync::Mutex`,
//! never held across an `.await`. A call locks it to queue its request
//! ([`Connection::start`]), wakes the driver, and then waits ([`Waiting`]): each poll takes
//! its outcome from the core or leaves its waker. The driver task ([`drive`]) owns the
//! socket: in each turn it reads what the socket holds into the core, expires deadlines,
//! writes what the core has queued (the requests of every call started since the last turn,
//! in one write), and wakes the calls that ended; then it sleeps until the socket is readable
//! (or writable, when a write was cut short), a call wakes it, or the earliest deadline.
//!
//! Backpressure: while the core holds [`OUTPUT_HIGH_WATER`] bytes or more not yet written, a
//! new call waits ([`Connection::room`]) before it queues its request; the driver wakes the
//! calls waiting so once a write takes the queue below the mark.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::builder::ClientBuilder;
use crate::client::core::ClientCore;
use crate::client::{later, ClientError};

/// Room made in the receive buffer before each read: 16 KiB.
const READ_CHUNK: usize = 16 * 1024;

/// Reads per turn of the driver at most, before it writes and looks at the deadlines again.
const READS_PER_TURN: usize = 16;

/// Bytes queued and not yet written at which new calls wait before they queue their
/// requests: 1 MiB, the courier server's own high-water mark for a connection's queued
/// output. One call may pass it (a request is queued whole), so the queue holds at most this
/// plus one frame, plus what waiting calls queue together once woken.
pub(super) const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Turns after which the driver yields to the runtime's other tasks, however busy it is.
const TURNS_PER_YIELD: u32 = 64;

/// The time as the core gets it: tokio's clock (which a test may pause), as a std `Instant`.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Locks `mutex`; a panic elsewhere while it was held leaves the state as it was, and the
/// core's state is valid after any of its calls, so the lock is taken all the same.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection: its protocol state, shared by its calls and its driver task.
pub(super) struct Connection {
    state: Mutex<State>,
    /// Wakes the driver: a call queued bytes, gave up, or the connection is to end.
    wake_driver: Notify,
    /// The driver task, for [`Connection::close`] to wait for.
    driver: Mutex<Option<JoinHandle<()>>>,
    /// Wakes every call waiting for room in the queue ([`Connection::room`]).
    room_made: Notify,
}

/// What [`Connection::start`] did with a call.
pub(super) enum Start {
    /// Queued, with this request id.
    Queued(u64),
    /// Not queued: the connection takes no new call (GOAWAY, or the client moved on).
    Moved,
    /// Not queued: the queue is at its high-water mark.
    Full,
}

/// What the lock guards.
struct State {
    core: ClientCore,
    /// The waker of each call waiting on the core, by request id.
    wakers: HashMap<u64, Waker>,
    /// No new call will start here: the client moved to a new connection after a GOAWAY, or
    /// every handle of the client is gone. The driver closes the connection once no call
    /// waits.
    released: bool,
    /// The connection is being closed from this side: what the core still queues (the TLS
    /// close_notify) is written although the core has ended.
    closing: bool,
    /// A call waits for the queued output to fall below [`OUTPUT_HIGH_WATER`]
    /// ([`Connection::room`]): the driver notifies [`Connection::room_made`] once it has.
    wants_room: bool,
}

impl State {
    /// The wakers of the calls that ended since the last look.
    fn ended_calls(&mut self, wake: &mut Vec<Waker>) {
        let State { core, wakers, .. } = self;
        wake.extend(core.completed().filter_map(|id| wakers.remove(&id)));
    }

    /// Whether to notify the calls waiting for room: some wait, and there is room now.
    fn room_made(&mut self) -> bool {
        let made = self.wants_room && (self.released || has_room(&self.core));
        if made {
            self.wants_room = false;
        }
        made
    }
}

/// Whether a new call may queue its request: the queued output is below
/// [`OUTPUT_HIGH_WATER`], or the connection takes no more calls (the call then learns why
/// when it starts).
fn has_room(core: &ClientCore) -> bool {
    core.queued_output() < OUTPUT_HIGH_WATER || core.check_usable().is_err() || core.is_draining()
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        // The core shows the sizes of its buffers, never their bytes.
        f.debug_struct("Connection")
            .field("core", &state.core)
            .field("wakers", &state.wakers.len())
            .field("released", &state.released)
            .field("closing", &state.closing)
            .field("wants_room", &state.wants_room)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the first of `addrs` that accepts (each within the connect timeout); with
    /// TLS runs the handshake, with a token authenticates (each within the connect timeout
    /// again); then spawns the driver task. Its first request id is `first_id`. A TLS or AUTH
    /// failure is returned at once: the next address is only tried when TCP fails.
    ///
    /// # Errors
    /// As [`ClientBuilder::connect`].
    pub(super) async fn open(
        config: &ClientBuilder,
        addrs: &[SocketAddr],
        first_id: u64,
    ) -> Result<Arc<Connection>, ClientError> {
        let mut last_err = ClientError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no address to connect to",
        ));
        for &addr in addrs {
            let socket = match tokio::time::timeout(
                config.connect_timeout,
                TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(socket)) => socket,
                Ok(Err(err)) => {
                    last_err = err.into();
                    continue;
                }
                Err(_) => {
                    last_err = ClientError::Timeout;
                    continue;
                }
            };
            socket.set_nodelay(true)?;
            let mut core = ClientCore::new(&config.core_config(), addr, first_id)?;
            if let Err(err) = start(&socket, &mut core, config).await {
                // The close_notify, best effort; the socket closes when dropped.
                core.close();
                let _ = socket.try_write(core.transmit());
                return Err(err);
            }
            return Ok(Connection::spawn(core, socket));
        }
        Err(last_err)
    }

    /// Shares `core` and spawns the task that drives `socket`.
    fn spawn(mut core: ClientCore, socket: TcpStream) -> Arc<Connection> {
        // The connect phase took its outcomes by id.
        core.completed().for_each(drop);
        let conn = Arc::new(Connection {
            state: Mutex::new(State {
                core,
                wakers: HashMap::new(),
                released: false,
                closing: false,
                wants_room: false,
            }),
            wake_driver: Notify::new(),
            driver: Mutex::new(None),
            room_made: Notify::new(),
        });
        let task = tokio::spawn(drive(Arc::clone(&conn), socket));
        *lock(&conn.driver) = Some(task);
        conn
    }

    /// Reads the core.
    pub(super) fn with_core<T>(&self, read: impl FnOnce(&ClientCore) -> T) -> T {
        read(&lock(&self.state).core)
    }

    /// Queues a call with `start` (which returns its request id) and wakes the driver to send
    /// it, all under one lock: [`Start::Queued`] with the id; [`Start::Moved`] when the
    /// connection takes no new call because the server sent GOAWAY or the client moved on
    /// (the caller starts it on the current connection instead); [`Start::Full`] when
    /// [`OUTPUT_HIGH_WATER`] bytes or more wait to be written (the caller waits for
    /// [`Connection::room`], then tries again).
    ///
    /// # Errors
    /// `start`'s.
    pub(super) fn start(
        &self,
        start: impl FnOnce(&mut ClientCore, Instant) -> Result<u64, ClientError>,
    ) -> Result<Start, ClientError> {
        let mut state = lock(&self.state);
        if state.released || state.core.is_draining() {
            return Ok(Start::Moved);
        }
        if !has_room(&state.core) {
            return Ok(Start::Full);
        }
        let id = start(&mut state.core, now())?;
        drop(state);
        self.wake_driver.notify_one();
        Ok(Start::Queued(id))
    }

    /// After [`Start::Full`]: waits until there may be room (the driver has written below
    /// [`OUTPUT_HIGH_WATER`], or the connection takes no more calls). A call that gives up
    /// waiting (its future dropped) leaves nothing behind.
    pub(super) async fn room(&self) {
        // Registered before the look, so that a notification between the two is kept.
        let mut made = pin!(self.room_made.notified());
        made.as_mut().enable();
        {
            let mut state = lock(&self.state);
            if state.released || has_room(&state.core) {
                return;
            }
            state.wants_room = true;
        }
        made.await;
    }

    /// Waits for the outcome of call `id`, taken from the core with `take`.
    pub(super) fn wait<T>(self: Arc<Self>, id: u64, take: Take<T>) -> Waiting<T> {
        Waiting {
            conn: self,
            id,
            take,
            done: false,
        }
    }

    /// No new call will start here: the driver ends the connection once no call waits.
    pub(super) fn release(&self) {
        lock(&self.state).released = true;
        self.wake_driver.notify_one();
    }

    /// Ends the connection from this side: every waiting call ends with
    /// [`ClientError::Closed`], the driver writes the TLS close_notify (if any) and closes the
    /// socket; returns once it has.
    pub(super) async fn close(&self) {
        let mut wake = Vec::new();
        {
            let mut state = lock(&self.state);
            if !state.core.is_ended() {
                state.closing = true;
                state.core.close();
            }
            state.ended_calls(&mut wake);
        }
        wake.into_iter().for_each(Waker::wake);
        self.wake_driver.notify_one();
        let task = lock(&self.driver).take();
        if let Some(task) = task {
            // A driver that panicked has ended the core all the same (its guard).
            let _ = task.await;
        }
    }
}

/// How a [`Waiting`] takes its outcome from the core.
pub(super) type Take<T> = fn(&mut ClientCore, u64) -> Option<Result<T, ClientError>>;

/// A call waiting for its outcome. Dropped before it has it, it abandons the call: the core
/// forgets it (a late answer is dropped) and its waker goes.
pub(super) struct Waiting<T> {
    conn: Arc<Connection>,
    id: u64,
    take: Take<T>,
    /// The outcome was taken.
    done: bool,
}

impl<T> fmt::Debug for Waiting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Future for Waiting<T> {
    type Output = Result<T, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            // Polled again after it returned: the outcome is gone.
            return Poll::Ready(Err(ClientError::Closed));
        }
        let mut state = lock(&this.conn.state);
        let outcome = match (this.take)(&mut state.core, this.id) {
            Some(outcome) => outcome,
            // Ended and taken elsewhere: cannot happen while this future owns the id.
            None if !state.core.holds(this.id) => Err(ClientError::Closed),
            None => {
                match state.wakers.entry(this.id) {
                    Entry::Occupied(mut entry) => {
                        if !entry.get().will_wake(cx.waker()) {
                            entry.insert(cx.waker().clone());
                        }
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(cx.waker().clone());
                    }
                }
                return Poll::Pending;
            }
        };
        state.wakers.remove(&this.id);
        this.done = true;
        Poll::Ready(outcome)
    }
}

impl<T> Drop for Waiting<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(&self.conn.state);
        state.core.abandon(self.id);
        state.wakers.remove(&self.id);
        let last = state.released && state.core.waiting() == 0;
        drop(state);
        if last {
            // The driver of a released connection ends it once no call waits.
            self.conn.wake_driver.notify_one();
        }
    }
}

/// What the driver does after a turn.
enum Turn {
    /// Waits for the socket, a call, or `deadline`; for writability too when `write_blocked`.
    Wait {
        deadline: Option<Instant>,
        write_blocked: bool,
    },
    /// The connection has ended.
    Exit,
}

/// Ends the core if the driver stops before it has (the runtime shut down), and wakes every
/// call still waiting, which then finds its outcome ([`ClientError::Closed`]).
struct DriverGuard<'a>(&'a Connection);

impl Drop for DriverGuard<'_> {
    fn drop(&mut self) {
        let wake: Vec<Waker> = {
            let mut state = lock(&self.0.state);
            if !state.core.is_ended() {
                state.core.handle_io_error();
            }
            state.core.completed().for_each(drop);
            state.wakers.drain().map(|(_, waker)| waker).collect()
        };
        wake.into_iter().for_each(Waker::wake);
        // The core has ended: a call waiting for room learns so when it starts.
        self.0.room_made.notify_waiters();
    }
}

/// The driver task of `conn` on `socket`; ends with the connection.
async fn drive(conn: Arc<Connection>, socket: TcpStream) {
    let _guard = DriverGuard(&conn);
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut timer_at = None;
    let mut wake = Vec::new();
    let mut turns = 0u32;
    loop {
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(TURNS_PER_YIELD) {
            // Calls that keep waking it must not keep it from ever giving the thread up.
            tokio::task::yield_now().await;
        }
        let (turn, room_made) = {
            let mut state = lock(&conn.state);
            let turn = turn(&mut state, &socket);
            state.ended_calls(&mut wake);
            (turn, state.room_made())
        };
        wake.drain(..).for_each(Waker::wake);
        if room_made {
            conn.room_made.notify_waiters();
        }
        let (deadline, write_blocked) = match turn {
            Turn::Exit => break,
            Turn::Wait {
                deadline,
                write_blocked,
            } => (deadline, write_blocked),
        };
        if deadline != timer_at {
            if let Some(deadline) = deadline {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            timer_at = deadline;
        }
        // A wake-up sent during the turn left a permit: this returns at once.
        let mut woken = pin!(conn.wake_driver.notified());
        poll_fn(|cx| {
            let ready = woken.as_mut().poll(cx).is_ready()
                || socket.poll_read_ready(cx).is_ready()
                || (write_blocked && socket.poll_write_ready(cx).is_ready())
                || (timer_at.is_some() && timer.as_mut().poll(cx).is_ready());
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    // The socket closes when dropped.
}

/// One turn of the driver, under the lock: read, expire, write; whether to go on.
fn turn(state: &mut State, socket: &TcpStream) -> Turn {
    let now = now();
    let core = &mut state.core;
    if !core.is_ended() {
        read(core, socket, now);
    }
    if core.next_timeout().is_some_and(|deadline| deadline <= now) {
        core.handle_timeout(now);
    }
    if state.released && core.waiting() == 0 && !core.is_ended() {
        log::debug!(
            "{}: no call waits on a released connection: closed",
            core.peer_addr()
        );
        state.closing = true;
        core.close();
    }
    let mut write_blocked = false;
    if !core.is_ended() || state.closing {
        write_blocked = write(core, socket);
    }
    if core.check_usable().is_err() {
        // Ended, or broken (an ERROR frame, a protocol or TLS error): every call has its
        // outcome, and the alert or close_notify, if any, went out above (best effort).
        return Turn::Exit;
    }
    Turn::Wait {
        deadline: core.next_timeout(),
        write_blocked,
    }
}

/// Reads what the socket holds (up to [`READS_PER_TURN`] reads) into the core.
fn read(core: &mut ClientCore, socket: &TcpStream, now: Instant) {
    for _ in 0..READS_PER_TURN {
        let buf = core.receive_buffer();
        buf.reserve(READ_CHUNK);
        match socket.try_read_buf(buf) {
            Ok(0) => {
                // An end of stream in a handshake is the handshake's error; here the calls
                // end with Closed.
                let _ = core.handle_eof();
                return;
            }
            Ok(_) => {
                if core.handle_received(now).is_err() {
                    // Broken: every call ended with the error.
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("{}: read: {e}", core.peer_addr());
                core.handle_io_error();
                return;
            }
        }
    }
}

/// Writes what the core has queued, as much as the socket takes; whether the socket took
/// less than all.
fn write(core: &mut ClientCore, socket: &TcpStream) -> bool {
    loop {
        let bytes = core.transmit();
        if bytes.is_empty() {
            return false;
        }
        match socket.try_write(bytes) {
            Ok(0) => {
                if !core.is_ended() {
                    core.handle_io_error();
                }
                return false;
            }
            Ok(n) => core.advance_transmit(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("{}: write: {e}", core.peer_addr());
                // After the end (closing), nothing is lost but the close_notify.
                if !core.is_ended() {
                    core.handle_io_error();
                }
                return false;
            }
        }
    }
}

/// The connect phase, before the driver runs: the TLS handshake and AUTH, each within the
/// connect timeout.
async fn start(
    socket: &TcpStream,
    core: &mut ClientCore,
    config: &ClientBuilder,
) -> Result<(), ClientError> {
    if core.is_tls() {
        handshake(socket, core, later(now(), config.connect_timeout)).await?;
    }
    if let Some(token) = &config.token {
        let result = authenticate(socket, core, &token.0, config.connect_timeout).await;
        if result.is_err() {
            // Nothing of the AUTH frame, which holds the token, stays queued.
            core.discard_unsent();
        }
        result?;
    }
    Ok(())
}

/// Runs the TLS handshake until it ends or `deadline` passes; the client's Finished is
/// written before this returns.
async fn handshake(
    socket: &TcpStream,
    core: &mut ClientCore,
    deadline: Instant,
) -> Result<(), ClientError> {
    loop {
        flush(socket, core, deadline).await?;
        if !core.is_handshaking() {
            return Ok(());
        }
        match read_once(socket, core, deadline).await? {
            Read::Data => {
                if let Err(err) = core.handle_received(now()) {
                    // The alert that says why, if rustls queued one; the error is what counts.
                    let _ = flush(socket, core, deadline).await;
                    return Err(err);
                }
            }
            Read::Eof => {
                core.handle_eof()?;
                return Err(ClientError::Closed);
            }
            Read::TimedOut => return Err(ClientError::Timeout),
        }
    }
}

/// Sends AUTH with `token` and waits for its answer up to `timeout`.
async fn authenticate(
    socket: &TcpStream,
    core: &mut ClientCore,
    token: &[u8],
    timeout: Duration,
) -> Result<(), ClientError> {
    let id = core.start_auth(token, timeout, now())?;
    loop {
        if let Some(result) = core.finish_auth(id) {
            return result;
        }
        let Some(deadline) = core.deadline(id) else {
            return Err(ClientError::Closed);
        };
        if core.wants_transmit() && !core.is_ended() {
            flush(socket, core, deadline).await?;
        }
        match read_once(socket, core, deadline).await? {
            Read::Data => {
                if core.handle_received(now()).is_err() {
                    // AUTH ended with the error; the alert, if any, goes out (best effort).
                    let _ = flush(socket, core, deadline).await;
                }
            }
            // An end of stream in the handshake is the handshake's error, not AUTH's.
            Read::Eof => drop(core.handle_eof()),
            Read::TimedOut => core.handle_timeout(now()),
        }
    }
}

/// What one read of the connect phase gave.
enum Read {
    /// Bytes, now in the core's receive buffer.
    Data,
    /// The end of the stream.
    Eof,
    /// The deadline passed.
    TimedOut,
}

/// Writes every queued byte, waiting for the socket to take them until `deadline`.
///
/// # Errors
/// [`ClientError::Timeout`] past the deadline; [`ClientError::Io`], [`ClientError::Closed`]
/// when the socket fails or takes nothing.
async fn flush(
    socket: &TcpStream,
    core: &mut ClientCore,
    deadline: Instant,
) -> Result<(), ClientError> {
    loop {
        let bytes = core.transmit();
        if bytes.is_empty() {
            return Ok(());
        }
        match socket.try_write(bytes) {
            Ok(0) => {
                core.handle_io_error();
                return Err(ClientError::Closed);
            }
            Ok(n) => core.advance_transmit(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(deadline, socket.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => return Err(ClientError::Timeout),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                core.handle_io_error();
                return Err(e.into());
            }
        }
    }
}

/// Reads once into the core's receive buffer, waiting until `deadline` at most.
async fn read_once(
    socket: &TcpStream,
    core: &mut ClientCore,
    deadline: Instant,
) -> Result<Read, ClientError> {
    loop {
        let buf = core.receive_buffer();
        buf.reserve(READ_CHUNK);
        match socket.try_read_buf(buf) {
            Ok(0) => return Ok(Read::Eof),
            Ok(_) => return Ok(Read::Data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(deadline, socket.readable()).await {
                    Ok(ready) => ready?,
                    Err(_) => return Ok(Read::TimedOut),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}
