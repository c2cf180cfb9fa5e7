mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame, HEADER_LEN};
use courier_rpc::server::RunningServer;

use support::{
    assert_serving, encode, fix_header_crc, raw_connect, read_until_close, request, send_raw,
    start_default, tls_client_hello,
};

/// A server with a normal client already connected and served once.
fn server_with_bystander() -> (RunningServer, SocketAddr, Client) {
    let server = start_default();
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr).expect("connect the bystander client");
    bystander_call(&mut bystander, "before the stray bytes");
    (server, addr, bystander)
}

fn bystander_call(client: &mut Client, text: &'static str) {
    let reply = client
        .call(&ECHO, &Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|e| panic!("echo {text:?} on the bystander client: {e}"));
    assert_eq!(&reply[..], text.as_bytes());
}

/// Sends `bytes` on a new raw connection without closing our side, and returns what the
/// server sent before it closed. The server must decide on the bytes it has: if it waited for
/// more, the read would time out and fail the test.
fn send_stray(addr: SocketAddr, bytes: &[u8]) -> Vec<Frame> {
    let mut stream = raw_connect(addr);
    send_raw(&mut stream, bytes);
    read_until_close(&mut stream)
}

/// Asserts that `frames` is exactly one ERROR frame with `code` and request id 0 (the header
/// could not be trusted).
fn assert_single_error(frames: &[Frame], code: Code) -> String {
    match frames {
        [Frame::Error {
            request_id,
            code: got,
            message,
        }] => {
            assert_eq!(*got, code, "ERROR status (message: {message:?})");
            assert_eq!(*request_id, 0, "ERROR for an untrusted header carries id 0");
            message.clone()
        }
        other => panic!("expected exactly one ERROR frame before the close, got {other:?}"),
    }
}

/// `len` pseudo-random bytes from xorshift64 with a fixed seed.
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn http_request_gets_invalid_argument_error_and_close_without_waiting_for_a_full_header() {
    let (_server, addr, mut bystander) = server_with_bystander();
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert!(
        http.len() < HEADER_LEN,
        "the request is shorter than a header"
    );
    assert_single_error(&send_stray(addr, http), Code::INVALID_ARGUMENT);
    bystander_call(&mut bystander, "after the HTTP request");
    assert_serving(addr);
}

#[test]
fn a_single_stray_first_byte_is_enough_for_an_error_and_close() {
    let (_server, addr, mut bystander) = server_with_bystander();
    assert_single_error(&send_stray(addr, b"G"), Code::INVALID_ARGUMENT);
    bystander_call(&mut bystander, "after the single byte");
    assert_serving(addr);
}

#[test]
fn tls_client_hello_gets_invalid_argument_error_and_close() {
    let (_server, addr, mut bystander) = server_with_bystander();
    let hello = tls_client_hello();
    assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
    assert!(
        (80..=120).contains(&hello.len()),
        "a ~100-byte hello, got {}",
        hello.len()
    );
    assert_eq!(
        usize::from(u16::from_be_bytes([hello[3], hello[4]])),
        hello.len() - 5,
        "record length field"
    );
    assert_single_error(&send_stray(addr, &hello), Code::INVALID_ARGUMENT);
    bystander_call(&mut bystander, "after the TLS hello");
    assert_serving(addr);
}

#[test]
fn four_kib_of_random_garbage_gets_invalid_argument_error_and_close() {
    let (_server, addr, mut bystander) = server_with_bystander();
    let bytes = garbage(4096);
    assert_ne!(bytes[0], b'C', "the seed's first byte is not the magic's");
    assert_single_error(&send_stray(addr, &bytes), Code::INVALID_ARGUMENT);
    bystander_call(&mut bystander, "after the garbage");
    assert_serving(addr);
}

#[test]
fn wrong_version_byte_gets_unimplemented_error_and_close() {
    let (_server, addr, mut bystander) = server_with_bystander();
    let mut frame = encode(&request(77, ECHO.service, ECHO.method, b"from the future")).to_vec();
    frame[4] = 2;
    // A valid header CRC: the version is the only thing wrong.
    fix_header_crc(&mut frame);
    let message = assert_single_error(&send_stray(addr, &frame), Code::UNIMPLEMENTED);
    assert!(
        message.contains('1'),
        "the message should name the version the server speaks: {message:?}"
    );
    bystander_call(&mut bystander, "after the wrong version");
    assert_serving(addr);
}
