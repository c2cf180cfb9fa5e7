mod support;

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;
use courier_rpc::proto::Code;
use courier_rpc::server::Server;

use support::{
    assert_serving, bundled_router, expect_single_error, header_claiming, raw_connect,
    read_until_close, send_raw, start, start_default,
};

const LIMIT: u32 = 1024;

fn echo_round_trip(client: &mut Client, text: &'static str) {
    let reply = client
        .call(&ECHO, &Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|e| panic!("echo {text:?} on the bystander client: {e}"));
    assert_eq!(&reply[..], text.as_bytes());
}

#[test]
fn header_claiming_one_byte_over_the_limit_gets_resource_exhausted_and_close_while_others_are_served(
) {
    let server = start(Server::builder().max_body_len(LIMIT), bundled_router());
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr).expect("connect the bystander client");
    echo_round_trip(&mut bystander, "before the oversized frame");

    let mut offender = raw_connect(addr);
    send_raw(&mut offender, &header_claiming(4242, LIMIT + 1));
    let frames = read_until_close(&mut offender);
    expect_single_error(&frames, 4242, Code::RESOURCE_EXHAUSTED);

    echo_round_trip(&mut bystander, "after the oversized frame");
    assert_serving(addr);
}

#[test]
fn header_claiming_u32_max_bytes_with_the_default_limit_gets_resource_exhausted() {
    let server = start_default();
    let addr = server.local_addr();
    let mut offender = raw_connect(addr);
    send_raw(&mut offender, &header_claiming(0xDEAD_BEEF, u32::MAX));
    let frames = read_until_close(&mut offender);
    expect_single_error(&frames, 0xDEAD_BEEF, Code::RESOURCE_EXHAUSTED);
    assert_serving(addr);
}

#[test]
fn body_of_exactly_the_limit_is_served() {
    let server = start(Server::builder().max_body_len(LIMIT), bundled_router());
    let mut client = Client::builder()
        .max_body_len(2 * LIMIT)
        .connect(server.local_addr())
        .expect("connect");
    let payload: Bytes = (0..LIMIT)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    assert_eq!(payload.len(), LIMIT as usize);
    let reply = client
        .call(&ECHO, &payload)
        .expect("an echo of exactly the limit is served");
    assert_eq!(reply, payload);
    // The connection stays open: a second call works too.
    let reply = client
        .call(&ECHO, &Bytes::from_static(b"small"))
        .expect("a second call on the same connection");
    assert_eq!(&reply[..], b"small");
}

#[test]
fn oversized_frame_sent_with_its_whole_body_still_gets_resource_exhausted_before_the_close() {
    let server = start(Server::builder().max_body_len(LIMIT), bundled_router());
    let addr = server.local_addr();
    // 256 KiB of body the server will never decode: it must read and discard it (linger)
    // rather than close with unread input, whose reset could destroy the ERROR frame.
    let body_len: u32 = 256 * 1024;
    let mut wire = header_claiming(99, body_len);
    wire.extend((0..body_len).map(|i| (i % 253) as u8));
    let mut offender = raw_connect(addr);
    send_raw(&mut offender, &wire);
    let frames = read_until_close(&mut offender);
    expect_single_error(&frames, 99, Code::RESOURCE_EXHAUSTED);
    assert_serving(addr);
}
