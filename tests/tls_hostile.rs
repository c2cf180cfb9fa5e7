//! The hostile-client defences over TLS: slowloris inside the TLS stream, an oversized frame,
//! a PONG flood and a burst of handshakes, each while a well-behaved TLS client is served.
//! The plaintext versions are in tests/hostile.rs.

mod support;

use std::thread;
use std::time::Duration;

use courier_rpc::admin::WHOAMI;
use courier_rpc::proto::{Code, Frame, HEADER_LEN};
use courier_rpc::server::{RunningServer, Server, ServerBuilder};

use support::tls::TestPki;
use support::tls_raw::{self, Tls};

fn start_tls(pki: &TestPki, builder: ServerBuilder) -> RunningServer {
    support::start(
        builder.tls(pki.server_config(false)),
        support::bundled_router(),
    )
}

/// A call that must be answered.
fn served(tls: &mut Tls, id: u64) {
    match tls_raw::call(tls, id, 0, WHOAMI.method, b"").expect("the bystander is served") {
        Frame::Response(r) => assert_eq!(r.code, Code::OK),
        other => panic!("expected a response, got {other:?}"),
    }
}

fn single_error(frames: &[Frame]) -> (u64, Code) {
    match frames {
        [Frame::Error {
            request_id, code, ..
        }] => (*request_id, *code),
        other => panic!("expected one ERROR frame, got {other:?}"),
    }
}

#[test]
fn slowloris_inside_tls_is_timed_out_while_a_normal_client_is_served() {
    const SLOW: usize = 150;
    let pki = support::tls::generate(&[]);
    let server = start_tls(
        &pki,
        Server::builder()
            .frame_timeout(Duration::from_millis(500))
            .linger(Duration::from_millis(250)),
    );
    let addr = server.local_addr();
    let config = pki.client_config();
    let mut bystander = tls_raw::connect(addr, &config).expect("handshake");
    served(&mut bystander, 1);
    let frame = support::echo_request(1, &[0x42; 64]);
    // Each sends 10 bytes of a frame inside TLS; two thirds then trickle a byte a round, the
    // last third falls silent.
    let mut slow: Vec<(Tls, usize)> = (0..SLOW)
        .map(|_| {
            let mut tls = tls_raw::connect(addr, &config).expect("handshake");
            tls_raw::send(&mut tls, &frame[..10]).expect("send");
            (tls, 10)
        })
        .collect();
    for round in 0..12u64 {
        for (i, (tls, sent)) in slow.iter_mut().enumerate() {
            if i % 3 != 1 && *sent < HEADER_LEN - 1 {
                let _ = tls_raw::send(tls, &frame[*sent..*sent + 1]);
                *sent += 1;
            }
        }
        served(&mut bystander, 2 + round);
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        support::wait_for_counter(&server, "closed_frame_timeout", SLOW as u64),
        SLOW as u64
    );
    // The silent ones were told, inside TLS: ERROR DEADLINE_EXCEEDED, then the close.
    for (tls, _) in slow.iter_mut().skip(1).step_by(3) {
        let frames = support::read_until_close(tls);
        assert_eq!(single_error(&frames), (0, Code::DEADLINE_EXCEEDED));
    }
    served(&mut bystander, 100);
}

#[test]
fn an_oversized_frame_inside_tls_gets_resource_exhausted() {
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, Server::builder().max_body_len(64 * 1024));
    let addr = server.local_addr();
    let config = pki.client_config();
    let mut bystander = tls_raw::connect(addr, &config).expect("handshake");
    let mut big = tls_raw::connect(addr, &config).expect("handshake");
    tls_raw::send(&mut big, &support::header_claiming(9, 64 * 1024 + 1)).expect("send");
    assert_eq!(
        single_error(&support::read_until_close(&mut big)),
        (9, Code::RESOURCE_EXHAUSTED)
    );
    assert_eq!(support::wait_for_counter(&server, "closed_protocol", 1), 1);
    served(&mut bystander, 1);
}

#[test]
fn a_pong_flood_inside_tls_is_cut_off() {
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, Server::builder());
    let addr = server.local_addr();
    let config = pki.client_config();
    let mut bystander = tls_raw::connect(addr, &config).expect("handshake");
    let mut flooder = tls_raw::connect(addr, &config).expect("handshake");
    let pongs: Vec<u8> = (0..200u64)
        .flat_map(|id| support::encode(&Frame::Pong(id)).to_vec())
        .collect();
    let _ = tls_raw::send(&mut flooder, &pongs);
    // The 101st PONG (id 100) trips the default limit of 100.
    assert_eq!(
        single_error(&support::read_until_close(&mut flooder)),
        (100, Code::RESOURCE_EXHAUSTED)
    );
    assert_eq!(support::wait_for_counter(&server, "closed_flood", 1), 1);
    served(&mut bystander, 1);
}

#[test]
fn a_burst_of_handshakes_completes_while_a_normal_client_is_served() {
    const CLIENTS: usize = 64;
    let pki = support::tls::generate(&[]);
    let server = start_tls(&pki, Server::builder().loops(1));
    let addr = server.local_addr();
    let config = pki.client_config();
    let mut bystander = tls_raw::connect(addr, &config).expect("handshake");
    let burst: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let config = config.clone();
            thread::spawn(move || {
                let mut tls = tls_raw::connect(addr, &config).expect("handshake");
                served(&mut tls, 1);
            })
        })
        .collect();
    for id in 0..20 {
        served(&mut bystander, id + 1);
    }
    for client in burst {
        client.join().expect("every client of the burst is served");
    }
    assert_eq!(
        support::counter(&server, "tls_handshakes"),
        CLIENTS as u64 + 1
    );
}
