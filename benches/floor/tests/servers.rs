//! floor-server's and ldc-server's code on real sockets on 127.0.0.1, spoken to with the
//! frames raw-bench sends: the answers' sizes and contents, a pipelined batch answered in
//! order, and raw-bench's own run against both, including its check of every answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use courier_floor::bench::{self, Config, Workload};
use courier_floor::wire::{self, FOUND, MISSING};

fn floor_server(value_size: usize) -> SocketAddr {
    let listener =
        mio::net::TcpListener::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || courier_floor::floor::serve(listener, value_size));
    addr
}

fn ldc_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || courier_floor::ldc::run(listener));
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Reads one answer frame: its payload.
fn read_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).expect("answer header");
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("answer payload");
    payload
}

/// Whether the server closes the connection (end of stream, or reset) within the read
/// timeout, after any bytes it sends first.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn ldc_answers_a_set_then_a_get_with_the_value_and_a_missing_key_with_status_1() {
    let addr = ldc_server();
    let mut stream = connect(addr);
    let mut out = Vec::new();
    wire::put_get(&mut out, &wire::key(7));
    stream.write_all(&out).expect("write");
    assert_eq!(read_answer(&mut stream), [MISSING]);

    out.clear();
    wire::put_set(&mut out, &wire::key(7), b"seven");
    stream.write_all(&out).expect("write");
    assert_eq!(read_answer(&mut stream), [FOUND]);

    // Another connection sees the same store.
    let mut other = connect(addr);
    out.clear();
    wire::put_get(&mut out, &wire::key(7));
    other.write_all(&out).expect("write");
    assert_eq!(read_answer(&mut other), b"\0seven");
}

#[test]
fn ldc_answers_a_pipelined_batch_of_16_in_order() {
    let mut stream = connect(ldc_server());
    let mut out = Vec::new();
    for i in 0..8u64 {
        let value = vec![b'a' + i as u8; i as usize + 1];
        wire::put_set(&mut out, &wire::key(i), &value);
        wire::put_get(&mut out, &wire::key(i));
    }
    // One write: the server reads the 16 frames at once and flushes once.
    stream.write_all(&out).expect("write");
    for i in 0..8u64 {
        assert_eq!(read_answer(&mut stream), [FOUND], "SET {i}");
        let mut want = vec![FOUND];
        want.extend(vec![b'a' + i as u8; i as usize + 1]);
        assert_eq!(read_answer(&mut stream), want, "GET {i}");
    }
}

#[test]
fn ldc_closes_a_connection_on_a_frame_too_short_to_hold_a_request() {
    let mut stream = connect(ldc_server());
    stream
        .write_all(&[0, 0, 0, 2, wire::GET, 0])
        .expect("write");
    assert!(closed(&mut stream));
}

#[test]
fn the_floor_answers_gets_and_sets_with_the_sizes_of_ldcs_answers() {
    let mut stream = connect(floor_server(10));
    let mut out = Vec::new();
    wire::put_get(&mut out, &wire::key(1));
    stream.write_all(&out).expect("write");
    let answer = read_answer(&mut stream);
    assert_eq!(answer.len(), wire::get_answer_len(10));
    assert_eq!(answer[0], FOUND);

    out.clear();
    wire::put_set(&mut out, &wire::key(1), b"value");
    stream.write_all(&out).expect("write");
    assert_eq!(read_answer(&mut stream), [FOUND]);
}

#[test]
fn the_floor_answers_a_pipelined_batch_of_16_in_order() {
    let mut stream = connect(floor_server(64));
    let mut out = Vec::new();
    let ops: Vec<bool> = (0..16).map(|i| i % 3 == 0).collect();
    for (i, &get) in ops.iter().enumerate() {
        if get {
            wire::put_get(&mut out, &wire::key(i as u64));
        } else {
            wire::put_set(&mut out, &wire::key(i as u64), &[b'x'; 64]);
        }
    }
    stream.write_all(&out).expect("write");
    for (i, &get) in ops.iter().enumerate() {
        let want = if get { wire::get_answer_len(64) } else { 1 };
        assert_eq!(read_answer(&mut stream).len(), want, "answer {i}");
    }
}

#[test]
fn the_floor_answers_a_frame_larger_than_its_read_buffer_once_it_is_complete() {
    let mut stream = connect(floor_server(64));
    let mut out = Vec::new();
    let value = vec![b'v'; 3 * courier_floor::floor::READ_BUFFER + 5];
    wire::put_set(&mut out, &wire::key(1), &value);
    let (head, tail) = out.split_at(out.len() - 1);
    stream.write_all(head).expect("write");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut byte = [0; 1];
    let early = stream.read(&mut byte);
    assert!(
        early.is_err(),
        "answered before the frame was complete: {early:?}"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(tail).expect("write");
    assert_eq!(read_answer(&mut stream), [FOUND]);
}

#[test]
fn the_floor_closes_a_connection_on_an_unknown_opcode() {
    let mut stream = connect(floor_server(64));
    stream.write_all(&[0, 0, 0, 1, 9]).expect("write");
    assert!(closed(&mut stream));
}

fn config(addr: SocketAddr, workload: Workload, pipeline: usize, prefill: bool) -> Config {
    Config {
        addr,
        clients: 4,
        pipeline,
        requests: 1001,
        workload,
        value_size: 64,
        keyspace: 500,
        prefill,
        threads: 2,
        seed: 1,
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn raw_bench_makes_every_request_against_both_servers_without_errors() {
    for addr in [floor_server(64), ldc_server()] {
        for workload in [Workload::Get, Workload::Set] {
            for pipeline in [1, 16] {
                let report = bench::run(&config(addr, workload, pipeline, true)).expect("run");
                assert_eq!(
                    (report.requests, report.errors),
                    (1001, 0),
                    "{addr} {workload:?} pipeline {pipeline}"
                );
                assert!(report.p50_ms > 0.0 && report.p99_ms >= report.p50_ms);
            }
        }
    }
}

#[test]
fn raw_bench_counts_answers_of_the_wrong_size_as_errors() {
    // Without the prefill the afternoon server misses every GET: 1-byte answers.
    let report = bench::run(&config(ldc_server(), Workload::Get, 16, false)).expect("run");
    assert_eq!((report.requests, report.errors), (1001, 1001));
    // The floor's GET answers carry 64-byte values; a run expecting 32 finds them wrong.
    let mut wrong = config(floor_server(64), Workload::Get, 1, false);
    wrong.value_size = 32;
    let report = bench::run(&wrong).expect("run");
    assert_eq!((report.requests, report.errors), (1001, 1001));
}

#[test]
fn the_raw_bench_binary_prints_one_json_line_and_fails_on_errors() {
    let addr = ldc_server().to_string();
    let bin = env!("CARGO_BIN_EXE_raw-bench");
    let run = |extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["--addr", &addr, "--clients", "3", "--requests", "300"])
            .args(["--keyspace", "100", "--pipeline", "4"])
            .args(extra)
            .output()
            .expect("raw-bench runs")
    };
    let missing = run(&[]);
    assert_eq!(missing.status.code(), Some(1));
    let ok = run(&["--prefill"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let line = String::from_utf8(ok.stdout).expect("utf-8");
    assert!(line.starts_with("{\"requests\":300,\"seconds\":"), "{line}");
    for field in ["requests_per_second", "p50_ms", "p99_ms"] {
        assert!(line.contains(&format!("\"{field}\":")), "{line}");
    }
    assert!(line.trim_end().ends_with("\"errors\":0}"), "{line}");
}
