//! Connection churn: thousands of clients that connect, send part of a frame and reset.
//!
//! In its own test binary so that no other test opens or closes file descriptors in the same
//! process while it counts them.

mod support;

use std::time::Duration;

use courier_rpc::echo::ECHO;
use courier_rpc::server::Server;

use support::{
    assert_serving, bundled_router, encode, hostile_set_linger_zero, hostile_stats,
    hostile_stats_client, hostile_wait_for_stats, open_fds, raise_fd_limit, raw_connect, request,
    send_raw, start,
};

const CYCLES: u64 = 10_000;

/// How long the test polls the counters before it gives up: generous, never hit on success.
const STATS_LIMIT: Duration = Duration::from_secs(20);

/// 10,000 cycles of connect, send part of a frame (1 byte up to all but the last byte of a
/// 236-byte echo request), then reset (SO_LINGER 0, so the close sends RST). Afterwards the
/// server holds nothing for them: `connections_open` and `buffered_bytes` are back to their
/// baselines, and this process (server included) has no more than a few more file
/// descriptors open than before.
#[test]
fn ten_thousand_connect_partial_frame_reset_cycles_leak_nothing() {
    raise_fd_limit();
    let server = start(Server::builder(), bundled_router());
    let addr = server.local_addr();
    let mut stats_client = hostile_stats_client(addr);
    let before = hostile_stats(&mut stats_client);
    let fds_before = open_fds();

    let frame = encode(&request(1, ECHO.service, ECHO.method, &[0x33; 200]));
    let cuts = [1, 4, 5, 6, 20, 35, 36, 37, 100, frame.len() - 1];
    for cycle in 0..CYCLES {
        let mut stream = raw_connect(addr);
        let cut = cuts[(cycle % cuts.len() as u64) as usize];
        send_raw(&mut stream, &frame[..cut]);
        hostile_set_linger_zero(&stream);
        drop(stream);
    }

    let base_open = before.value("connections_open");
    let base_buffered = before.value("buffered_bytes");
    let base_accepted = before.value("connections_accepted");
    let after = hostile_wait_for_stats(&mut stats_client, STATS_LIMIT, |r| {
        r.value("connections_accepted") - base_accepted >= CYCLES
            && r.value("connections_open") == base_open
            && r.value("buffered_bytes") == base_buffered
    });
    let closed: Vec<(String, u64)> = after
        .0
        .iter()
        .filter(|(name, _)| name.starts_with("closed_"))
        .map(|(name, value)| (name.clone(), value - before.value(name)))
        .filter(|(_, value)| *value > 0)
        .collect();
    println!("closes during the churn by cause: {closed:?}");
    assert_eq!(
        after.value("connections_accepted") - base_accepted,
        CYCLES,
        "every cycle's connection was accepted: {after:?}"
    );
    assert_eq!(
        closed.iter().map(|(_, n)| n).sum::<u64>(),
        CYCLES,
        "every cycle's connection was closed"
    );
    assert_eq!(
        after.value("connections_open"),
        base_open,
        "connections_open back to its baseline"
    );
    assert_eq!(
        after.value("buffered_bytes"),
        base_buffered,
        "buffered_bytes back to its baseline"
    );
    let fds_after = open_fds();
    println!("open fds: {fds_before} before the churn, {fds_after} after");
    assert!(
        fds_after <= fds_before + 5,
        "file descriptors leaked: {fds_before} before, {fds_after} after"
    );
    assert_serving(addr);
}
