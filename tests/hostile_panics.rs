//! A handler that panics now and then.
//!
//! In its own test binary because it installs a process-wide panic hook that silences the
//! deliberate panics.

mod support;

use std::sync::Once;
use std::thread;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::proto::{Code, Status};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};

use support::{bundled_router, hostile_stats, hostile_stats_client, start};

/// Answers its 8-byte big-endian value, and panics when the value is a multiple of 100.
const FLAKY: Method<Bytes, Bytes> = Method::new(50, 1, "hostile.Flaky");

/// Part of every deliberate panic's message, so that the quiet hook recognises them.
const PANIC_MARKER: &str = "hostile_panics: deliberate panic";

const REQUESTS: u64 = 10_000;
const CLIENTS: u64 = 4;
/// Requests a client sends before it collects their responses.
const BATCH: u64 = 100;

fn router() -> Router {
    let mut router = bundled_router();
    router.register(FLAKY, |_ctx, body: Bytes| {
        let bytes: [u8; 8] = body[..]
            .try_into()
            .map_err(|_| Status::invalid_argument("expected an 8-byte value"))?;
        let value = u64::from_be_bytes(bytes);
        if value.is_multiple_of(100) {
            panic!("{PANIC_MARKER} on value {value}");
        }
        Ok(body)
    });
    router
}

/// Silences the deliberate panics (they would print 100 backtrace notes); any other panic is
/// reported by the default hook as usual.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains(PANIC_MARKER) {
                default(info);
            }
        }));
    });
}

/// Sends the values `range` on one connection in pipelined batches; returns how many were
/// answered OK and how many INTERNAL. Panics on anything else, or if an INTERNAL answer is
/// not for a multiple of 100.
fn run_client(client: &mut Client, range: std::ops::Range<u64>) -> (u64, u64) {
    let (mut ok, mut internal) = (0, 0);
    let values: Vec<u64> = range.collect();
    for batch in values.chunks(BATCH as usize) {
        let pending: Vec<_> = batch
            .iter()
            .map(|&value| {
                let body = Bytes::copy_from_slice(&value.to_be_bytes());
                let handle = client
                    .send(&FLAKY, &body)
                    .unwrap_or_else(|e| panic!("send value {value}: {e}"));
                (value, handle)
            })
            .collect();
        for (value, handle) in pending {
            match client.wait(handle) {
                Ok(reply) => {
                    assert_ne!(value % 100, 0, "value {value} should have panicked");
                    assert_eq!(&reply[..], &value.to_be_bytes(), "echo of {value}");
                    ok += 1;
                }
                Err(ClientError::Status(status)) if status.code == Code::INTERNAL => {
                    assert_eq!(value % 100, 0, "value {value} answered {status:?}");
                    internal += 1;
                }
                Err(other) => panic!("value {value}: unexpected failure {other}"),
            }
        }
    }
    (ok, internal)
}

/// A handler that panics on 1% of requests (values that are multiples of 100) while 4
/// clients send 10,000 pipelined requests: exactly the 100 panicking requests are answered
/// INTERNAL, the other 9,900 OK, every connection stays usable, and `handler_panics` counts
/// exactly 100.
#[test]
fn handler_panicking_on_one_request_in_a_hundred_answers_internal_and_serves_the_rest() {
    install_quiet_panic_hook();
    let server = start(Server::builder(), router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);

    let per_client = REQUESTS / CLIENTS;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|k| {
            thread::spawn(move || {
                let mut client = Client::connect(addr).expect("connect a client");
                let counts = run_client(&mut client, k * per_client..(k + 1) * per_client);
                // The connection survived its handler's panics.
                let reply = client
                    .call(&FLAKY, &Bytes::copy_from_slice(&1u64.to_be_bytes()))
                    .expect("a call after the panics on the same connection");
                assert_eq!(&reply[..], &1u64.to_be_bytes());
                counts
            })
        })
        .collect();
    let (mut ok, mut internal) = (0, 0);
    for worker in workers {
        let (o, i) = worker.join().expect("a client thread");
        ok += o;
        internal += i;
    }
    assert_eq!(internal, 100, "answered INTERNAL");
    assert_eq!(ok, 9_900, "answered OK");

    let after = hostile_stats(&mut stats_client);
    let delta = |name: &str| after.value(name) - before.value(name);
    assert_eq!(delta("handler_panics"), 100);
    assert_eq!(delta("requests_INTERNAL"), 100);
    assert_eq!(delta("closed_protocol"), 0, "no connection broke");
    assert_eq!(delta("closed_io"), 0, "no connection broke");
}
