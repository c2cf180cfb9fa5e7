//! The afternoon server: what a user writes in an afternoon with tokio and tokio-util. Each
//! connection is a `Framed` stream with `LengthDelimitedCodec::new()` (its defaults: a 4-byte
//! big-endian length, frames up to 8 MiB), every request is looked up in or stored into one
//! `HashMap<Bytes, Bytes>` shared by the connections, and the answers are fed to the sink and
//! flushed once per batch: after a frame, the frames already buffered (or readable without
//! waiting) are answered too, and the sink is flushed when none is left. No checks beyond
//! what keeps a short frame from panicking, no limits. TCP_NODELAY on every accepted socket.
//!
//! It runs on one thread: a tokio current-thread runtime with a `LocalSet`, the store in an
//! `Rc<RefCell<_>>`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::wire::{FOUND, GET, MISSING, SET};

type Store = Rc<RefCell<HashMap<Bytes, Bytes>>>;

/// Runs the server on `listener` on this thread (a current-thread runtime of its own) until
/// accepting fails.
///
/// # Errors
/// Building the runtime, making the listener nonblocking, or accepting.
pub fn run(listener: std::net::TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener)?;
        serve(listener).await
    })
}

/// Serves every connection `listener` accepts, each on a task of its own; must run inside a
/// `LocalSet`.
///
/// # Errors
/// Accepting's.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    let store: Store = Rc::new(RefCell::new(HashMap::new()));
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let store = Rc::clone(&store);
        tokio::task::spawn_local(async move {
            let _ = connection(stream, store).await;
        });
    }
}

async fn connection(stream: TcpStream, store: Store) -> io::Result<()> {
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    while let Some(frame) = framed.next().await {
        framed.feed(answer(&store, frame?)?).await?;
        // One flush per batch: answer the frames that are already here first.
        while let Some(next) = framed.next().now_or_never() {
            match next {
                Some(frame) => framed.feed(answer(&store, frame?)?).await?,
                None => break,
            }
        }
        SinkExt::<Bytes>::flush(&mut framed).await?;
    }
    Ok(())
}

/// The answer to one request: GET's status and value, SET's status.
fn answer(store: &Store, frame: BytesMut) -> io::Result<Bytes> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed request");
    let mut frame = frame;
    if frame.len() < 3 {
        return Err(bad());
    }
    let op = frame.get_u8();
    let key_len = usize::from(frame.get_u16());
    if frame.len() < key_len {
        return Err(bad());
    }
    let key = frame.split_to(key_len);
    match op {
        GET => match store.borrow().get(&key[..]) {
            Some(value) => {
                let mut answer = BytesMut::with_capacity(1 + value.len());
                answer.put_u8(FOUND);
                answer.extend_from_slice(value);
                Ok(answer.freeze())
            }
            None => Ok(Bytes::from_static(&[MISSING])),
        },
        SET => {
            // Copies: a slice of the frame would keep the codec's whole read buffer alive
            // for as long as the entry is stored.
            store
                .borrow_mut()
                .insert(Bytes::copy_from_slice(&key), Bytes::copy_from_slice(&frame));
            Ok(Bytes::from_static(&[FOUND]))
        }
        _ => Err(bad()),
    }
}
