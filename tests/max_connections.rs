mod support;

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame};
use courier_rpc::server::Server;

use support::{assert_serving, bundled_router, raw_connect, read_until_close, send_raw, start};

const LIMIT: usize = 4;

fn echo(client: &mut Client, text: &str) -> Result<(), ClientError> {
    let reply = client.call(&ECHO, &Bytes::copy_from_slice(text.as_bytes()))?;
    assert_eq!(&reply[..], text.as_bytes());
    Ok(())
}

/// Connects and makes one call, retrying up to `attempts` times 20 ms apart: the server
/// notices closed connections asynchronously, so a slot frees up a moment after the close.
/// Returns the served client, or panics with the last error.
fn connect_when_a_slot_frees(addr: SocketAddr, attempts: usize) -> Client {
    let mut last_err = String::from("no attempt made");
    for attempt in 0..attempts {
        match Client::connect(addr) {
            Ok(mut client) => match echo(&mut client, &format!("attempt {attempt}")) {
                Ok(()) => return client,
                Err(err) => last_err = err.to_string(),
            },
            Err(err) => last_err = err.to_string(),
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("no new client served after {attempts} attempts; last error: {last_err}");
}

/// Asserts that `frames` is exactly one ERROR with RESOURCE_EXHAUSTED.
fn assert_rejected(frames: &[Frame]) {
    match frames {
        [Frame::Error { code, message, .. }] => {
            assert_eq!(
                *code,
                Code::RESOURCE_EXHAUSTED,
                "ERROR status ({message:?})"
            );
        }
        other => panic!("expected one ERROR frame (RESOURCE_EXHAUSTED) then EOF, got {other:?}"),
    }
}

#[test]
fn fifth_connection_gets_resource_exhausted_and_a_freed_slot_is_reused() {
    let server = start(Server::builder().max_connections(LIMIT), bundled_router());
    let addr = server.local_addr();

    let mut clients: Vec<Client> = (0..LIMIT)
        .map(|i| {
            let mut client = Client::connect(addr).expect("connect one of the first four");
            // A call proves the server accepted this connection and holds a slot for it.
            echo(&mut client, &format!("client {i}"))
                .unwrap_or_else(|e| panic!("client {i} within the limit is served: {e}"));
            client
        })
        .collect();

    let mut fifth = raw_connect(addr);
    assert_rejected(&read_until_close(&mut fifth));

    for (i, client) in clients.iter_mut().enumerate() {
        echo(client, &format!("client {i} after the rejection"))
            .unwrap_or_else(|e| panic!("client {i} is still served after the rejection: {e}"));
    }

    clients.remove(0).close();
    let mut newcomer = connect_when_a_slot_frees(addr, 100);
    echo(&mut newcomer, "newcomer").expect("the newcomer keeps being served");
    for (i, client) in clients.iter_mut().enumerate() {
        echo(client, &format!("remaining client {i}")).expect("the other three still work");
    }
}

/// Sends stray bytes (fatal: ERROR, then the server lingers) on a fresh connection until the
/// server accepts it instead of rejecting it for the limit. Returns the socket, still open,
/// after the server's ERROR and its write-side EOF.
fn provoke_linger(addr: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        let mut stream = raw_connect(addr);
        send_raw(&mut stream, b"GET / HTTP/1.1\r\n\r\n");
        match &read_until_close(&mut stream)[..] {
            [Frame::Error {
                code: Code::INVALID_ARGUMENT,
                ..
            }] => return stream,
            // Rejected at the limit: the previous connection is not closed yet.
            [Frame::Error {
                code: Code::RESOURCE_EXHAUSTED,
                ..
            }] => thread::sleep(Duration::from_millis(20)),
            other => panic!("expected an ERROR frame, got {other:?}"),
        }
    }
    panic!("the server never accepted a connection to provoke a linger");
}

/// A lingering connection whose peer never closes must still be closed when its linger time
/// is up, freeing its slot, even when it reuses the slot of a connection that lingered before.
#[test]
fn a_lingering_connection_frees_its_slot_when_the_linger_ends_even_after_slot_reuse() {
    let linger = Duration::from_millis(500);
    let server = start(
        Server::builder().max_connections(1).linger(linger),
        bundled_router(),
    );
    let addr = server.local_addr();

    // First connection: lingers, then we close it, so the server closes it early (peer EOF).
    let first = provoke_linger(addr);
    drop(first);
    // Second connection, in the same slot, well within the first one's linger: it lingers and
    // we keep it open, so only the linger deadline can close it.
    let _second = provoke_linger(addr);

    // With a limit of 1, a new client is served only once the second connection is closed:
    // 250 attempts 20 ms apart span 10 times the linger.
    let mut client = connect_when_a_slot_frees(addr, 250);
    echo(&mut client, "after the linger").expect("served after the linger");
    drop(client);
    assert_serving(addr);
}
