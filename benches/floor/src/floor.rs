//! The floor: a bare mio server on one thread that does only what any server of
//! length-prefixed frames must do. It reads, finds each frame's 4-byte length and its first
//! payload byte (the opcode), and when a frame is complete appends a canned answer of the size
//! the afternoon server ([`crate::ldc`]) sends: for a GET, status [`FOUND`] and a
//! `value_size`-byte value; for a SET, status [`FOUND`]. No checksum, no key, no map.
//!
//! Per connection: one fixed read buffer (16 KiB, as courier's `READ_CHUNK`) and one output
//! buffer, both reused; nothing is allocated per request. The socket is read until it is
//! drained, and the answers to each read go out in one `write`; what the socket does not take
//! is kept, with WRITABLE interest, until it does. An output over [`OUTPUT_HIGH_WATER`]
//! (a client that sends and does not read) stops the reading until it is written.
//! TCP_NODELAY is set on every accepted socket, as courier's server sets it.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::wire::{self, Scanner, FOUND, GET, SET};

/// Bytes of a connection's read buffer: 16 KiB, courier's `READ_CHUNK`.
pub const READ_BUFFER: usize = 16 * 1024;
/// Output a connection may hold before its reading stops until it is written: 1 MiB.
pub const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

const LISTENER: Token = Token(usize::MAX);

/// What a connection reads for. On Linux urgent (TCP out-of-band) data too, as courier's
/// server does: a read stops short at the urgent mark though more data follows, so after it
/// a short read no longer proves the socket drained.
#[cfg(any(target_os = "linux", target_os = "android"))]
const READ_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const READ_INTEREST: Interest = Interest::READABLE;

/// The two canned answers, whole frames.
#[derive(Debug)]
struct Answers {
    get: Vec<u8>,
    set: Vec<u8>,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    scanner: Scanner,
    out: Vec<u8>,
    /// Registered for WRITABLE too: output waits.
    writing: bool,
    /// The poller reported the end of stream, an error or urgent data: from then on the
    /// socket is read until `WouldBlock` or the end of stream, not only until a short read.
    read_until_blocked: bool,
}

/// Why a connection ends.
enum Close {
    /// The peer closed, or the socket failed.
    Gone,
    /// A frame with no opcode, or an opcode that is neither GET nor SET.
    BadFrame,
}

/// Serves every connection `listener` accepts, on this thread, answering GETs with
/// `value_size`-byte values, until the poller fails.
///
/// # Errors
/// The poller's (creating it, registering with it, or waiting on it).
pub fn serve(mut listener: TcpListener, value_size: usize) -> io::Result<()> {
    let mut answers = Answers {
        get: Vec::with_capacity(wire::HEADER_LEN + wire::get_answer_len(value_size)),
        set: Vec::with_capacity(wire::HEADER_LEN + wire::SET_ANSWER_LEN),
    };
    wire::put_answer(&mut answers.get, FOUND, &vec![b'x'; value_size]);
    wire::put_answer(&mut answers.set, FOUND, &[]);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if event.is_read_closed() || event.is_error() || event.is_priority() {
                conn.read_until_blocked = true;
            }
            if serve_conn(conn, &poll, event.token(), &answers).is_err() {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Accepts until the listener would block; a failed accept (out of file descriptors) waits
/// for the next readiness event.
fn accept(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                eprintln!("floor-server: accept failed: {err}");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let entry = conns.vacant_entry();
        if poll
            .registry()
            .register(&mut stream, Token(entry.key()), READ_INTEREST)
            .is_err()
        {
            continue;
        }
        entry.insert(Conn {
            stream,
            scanner: Scanner::new(READ_BUFFER),
            out: Vec::new(),
            writing: false,
            read_until_blocked: false,
        });
    }
}

/// Handles a readiness event of one connection: writes what waits, then reads until the
/// socket is drained (or the output is over its high water), each read's answers in one
/// write.
fn serve_conn(conn: &mut Conn, poll: &Poll, token: Token, answers: &Answers) -> Result<(), Close> {
    if conn.writing {
        write_out(conn)?;
        if !conn.out.is_empty() {
            return Ok(());
        }
        conn.writing = false;
        poll.registry()
            .reregister(&mut conn.stream, token, READ_INTEREST)
            .map_err(|_| Close::Gone)?;
        // Edge-triggered: bytes that came while the reading was stopped bring no new event,
        // so the socket is read now.
    }
    read(conn, answers)?;
    if !conn.out.is_empty() && !conn.writing {
        conn.writing = true;
        poll.registry()
            .reregister(&mut conn.stream, token, READ_INTEREST | Interest::WRITABLE)
            .map_err(|_| Close::Gone)?;
    }
    Ok(())
}

/// Reads until the socket is drained or the output reaches its high water, answering every
/// frame each read completes with one `write` per read.
fn read(conn: &mut Conn, answers: &Answers) -> Result<(), Close> {
    while conn.out.len() < OUTPUT_HIGH_WATER {
        let spare = conn.scanner.spare();
        let room = spare.len();
        let n = match conn.stream.read(spare) {
            Ok(0) => return Err(Close::Gone),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close::Gone),
        };
        // A tail left by an earlier write means the socket's send buffer is full: the answers
        // wait for WRITABLE with it.
        let had_tail = !conn.out.is_empty();
        let out = &mut conn.out;
        conn.scanner.advance(n, |_, op| {
            match op {
                Some(GET) => out.extend_from_slice(&answers.get),
                Some(SET) => out.extend_from_slice(&answers.set),
                _ => return Err(Close::BadFrame),
            }
            Ok(())
        })?;
        if !had_tail && !conn.out.is_empty() {
            write_once(conn)?;
        }
        // On Linux a TCP read copies out everything the receive queue holds, up to the room
        // it is given, so a read that returns less than the room emptied the queue: the next
        // byte to arrive brings a new edge, and a read now would only return WouldBlock.
        // Not after the end of stream, an error or urgent data (a read stops short at the
        // urgent mark); then the socket is read until WouldBlock.
        if n < room && !conn.read_until_blocked {
            return Ok(());
        }
    }
    Ok(())
}

/// One `write` of the output; keeps what the socket did not take.
fn write_once(conn: &mut Conn) -> Result<(), Close> {
    loop {
        match conn.stream.write(&conn.out) {
            Ok(0) => return Err(Close::Gone),
            Ok(n) => {
                conn.out.drain(..n);
                return Ok(());
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Close::Gone),
        }
    }
}

/// Writes the output until it is all written or the socket would block.
fn write_out(conn: &mut Conn) -> Result<(), Close> {
    while !conn.out.is_empty() {
        let before = conn.out.len();
        write_once(conn)?;
        if conn.out.len() == before {
            break;
        }
    }
    Ok(())
}
