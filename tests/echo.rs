//! The echo service over loopback: bodies of every size come back byte for byte.

mod support;

use bytes::Bytes;
use courier_rpc::client::Client;
use courier_rpc::echo::ECHO;

#[test]
fn echo_returns_the_body_for_sizes_from_empty_to_one_mebibyte() {
    let server = support::start_default();
    let mut client = Client::connect(server.local_addr()).expect("connect");
    for size in [
        0usize,
        1,
        35,
        36,
        37,
        4095,
        16 * 1024,
        16 * 1024 + 1,
        1 << 20,
    ] {
        let body: Bytes = (0..size)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let reply = client.call(&ECHO, &body).expect("echo");
        assert_eq!(reply.len(), size);
        assert_eq!(reply, body, "body of {size} bytes changed on the way");
    }
}

#[test]
fn echo_serves_many_sequential_clients() {
    let server = support::start_default();
    for i in 0..50u32 {
        let mut client = Client::connect(server.local_addr()).expect("connect");
        let body = Bytes::from(i.to_be_bytes().to_vec());
        assert_eq!(client.call(&ECHO, &body).expect("echo"), body);
    }
}
