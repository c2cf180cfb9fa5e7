//! The router over loopback: unknown services and methods, undecodable messages, handler
//! errors and panics.

mod support;

use bytes::Bytes;
use courier_rpc::client::{Client, ClientError};
use courier_rpc::proto::{Code, Status};
use courier_rpc::server::Server;
use courier_rpc::service::{Method, Router};

const DIVIDE: Method<Bytes, Bytes> = Method::new(7, 1, "math.Divide");
const PANIC: Method<Bytes, Bytes> = Method::new(7, 2, "math.Panic");
const MISSING_METHOD: Method<Bytes, Bytes> = Method::new(7, 99, "math.Missing");
const MISSING_SERVICE: Method<Bytes, Bytes> = Method::new(4000, 1, "nothing.Here");
/// Same ids as DIVIDE, but the client claims an empty request type: sends an empty body.
const DIVIDE_EMPTY: Method<(), Bytes> = Method::new(7, 1, "math.Divide");
/// A method whose handler takes `()`: any byte in the body fails to decode.
const STRICT: Method<(), ()> = Method::new(7, 3, "math.Strict");
const STRICT_WITH_BODY: Method<Bytes, ()> = Method::new(7, 3, "math.Strict");

fn router() -> Router {
    let mut router = Router::new();
    router.register(DIVIDE, |_ctx, body: Bytes| {
        let [a, b] = body[..] else {
            return Err(Status::invalid_argument("want two bytes"));
        };
        a.checked_div(b)
            .map(|q| Bytes::from(vec![q]))
            .ok_or_else(|| Status::out_of_range("division by zero"))
    });
    router.register(PANIC, |_ctx, body: Bytes| -> Result<Bytes, Status> {
        panic!("handler bug triggered by {} bytes", body.len())
    });
    router.register(STRICT, |_ctx, ()| Ok(()));
    router
}

fn remote_status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Status {
    match result {
        Err(ClientError::Status(s)) => s,
        other => panic!("expected a remote status, got {other:?}"),
    }
}

#[test]
fn unknown_service_and_method_are_unimplemented() {
    let server = support::start(Server::builder(), router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let s = remote_status(client.call(&MISSING_SERVICE, &Bytes::new()));
    assert_eq!(s.code, Code::UNIMPLEMENTED);
    assert!(s.message.contains("4000"), "message names the service: {s}");
    let s = remote_status(client.call(&MISSING_METHOD, &Bytes::new()));
    assert_eq!(s.code, Code::UNIMPLEMENTED);
    assert!(s.message.contains("99"), "message names the method: {s}");
    // The connection is fine afterwards.
    assert_eq!(
        client
            .call(&DIVIDE, &Bytes::from_static(&[9, 3]))
            .expect("divide"),
        Bytes::from_static(&[3])
    );
}

#[test]
fn handler_status_reaches_the_client_with_its_message() {
    let server = support::start(Server::builder(), router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let s = remote_status(client.call(&DIVIDE, &Bytes::from_static(&[1, 0])));
    assert_eq!(s, Status::out_of_range("division by zero"));
    let s = remote_status(client.call(&DIVIDE_EMPTY, &()));
    assert_eq!(s, Status::invalid_argument("want two bytes"));
}

#[test]
fn undecodable_request_message_is_invalid_argument() {
    let server = support::start(Server::builder(), router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let s = remote_status(client.call(&STRICT_WITH_BODY, &Bytes::from_static(b"x")));
    assert_eq!(s.code, Code::INVALID_ARGUMENT);
    assert!(
        s.message.contains("math.Strict"),
        "message names the method: {s}"
    );
    client.call(&STRICT, &()).expect("an empty body decodes");
}

#[test]
fn panicking_handler_is_internal_and_the_server_goes_on() {
    let server = support::start(Server::builder(), router());
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let mut other = Client::connect(server.local_addr()).expect("connect");
    for round in 0..20u8 {
        let s = remote_status(client.call(&PANIC, &Bytes::from(vec![0; round as usize])));
        assert_eq!(s.code, Code::INTERNAL);
        // The same connection and another one are both still served.
        assert_eq!(
            client
                .call(&DIVIDE, &Bytes::from(vec![round, 1]))
                .expect("same connection"),
            Bytes::from(vec![round])
        );
        assert_eq!(
            other
                .call(&DIVIDE, &Bytes::from(vec![round, 1]))
                .expect("other connection"),
            Bytes::from(vec![round])
        );
    }
}
