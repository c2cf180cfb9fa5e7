mod support;

use courier_rpc::echo::ECHO;
use courier_rpc::proto::{Code, Frame, HEADER_LEN};

use support::{
    assert_serving, encode, raw_connect, read_frames, read_until_close, request, send_raw,
    start_default,
};

#[test]
fn flipped_header_bit_gets_data_loss_error_with_request_id_zero_then_close() {
    let server = start_default();
    let addr = server.local_addr();
    let mut stream = raw_connect(addr);
    let mut frame = encode(&request(0x1234, ECHO.service, ECHO.method, b"payload")).to_vec();
    // Byte 10 is inside the request id: magic, version and kind stay valid, so only the header
    // CRC can catch it.
    frame[10] ^= 0x04;
    send_raw(&mut stream, &frame);
    let frames = read_until_close(&mut stream);
    match &frames[..] {
        [Frame::Error {
            request_id,
            code,
            message,
        }] => {
            assert_eq!(
                *code,
                Code::DATA_LOSS,
                "ERROR status (message: {message:?})"
            );
            assert_eq!(
                *request_id, 0,
                "the request id of a header with a bad CRC cannot be trusted: ERROR carries 0"
            );
        }
        other => panic!("expected exactly one ERROR frame before the close, got {other:?}"),
    }
    assert_serving(addr);
}

#[test]
fn corrupted_request_body_gets_data_loss_response_and_the_connection_goes_on() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());

    let mut corrupted =
        encode(&request(7, ECHO.service, ECHO.method, b"hello, checksums")).to_vec();
    corrupted[HEADER_LEN + 3] ^= 0x20;
    send_raw(&mut stream, &corrupted);
    match &read_frames(&mut stream, 1)[..] {
        [Frame::Response(response)] => {
            assert_eq!(
                response.request_id, 7,
                "the DATA_LOSS response names the request"
            );
            assert_eq!(response.code, Code::DATA_LOSS, "{response:?}");
        }
        other => panic!("expected one RESPONSE for the corrupted request, got {other:?}"),
    }

    send_raw(
        &mut stream,
        &encode(&request(8, ECHO.service, ECHO.method, b"intact")),
    );
    match &read_frames(&mut stream, 1)[..] {
        [Frame::Response(response)] => {
            assert_eq!(response.request_id, 8);
            assert_eq!(response.code, Code::OK, "{response:?}");
            assert_eq!(&response.payload[..], b"intact");
        }
        other => panic!("expected one RESPONSE for the intact request, got {other:?}"),
    }
}

#[test]
fn corrupted_body_between_two_valid_requests_in_one_write_only_fails_that_request() {
    let server = start_default();
    let mut stream = raw_connect(server.local_addr());
    let mut corrupted = encode(&request(21, ECHO.service, ECHO.method, b"middle")).to_vec();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    let mut wire = encode(&request(20, ECHO.service, ECHO.method, b"first")).to_vec();
    wire.extend_from_slice(&corrupted);
    wire.extend_from_slice(&encode(&request(22, ECHO.service, ECHO.method, b"last")));
    send_raw(&mut stream, &wire);
    let frames = read_frames(&mut stream, 3);
    let mut summary: Vec<(u64, Code, Vec<u8>)> = frames
        .into_iter()
        .map(|frame| match frame {
            Frame::Response(r) => {
                let payload = if r.code == Code::OK {
                    r.payload.to_vec()
                } else {
                    Vec::new()
                };
                (r.request_id, r.code, payload)
            }
            other => panic!("expected only RESPONSE frames, got {other:?}"),
        })
        .collect();
    // The protocol lets a server answer in any order: compare by request id.
    summary.sort_by_key(|(id, _, _)| *id);
    assert_eq!(
        summary,
        vec![
            (20, Code::OK, b"first".to_vec()),
            (21, Code::DATA_LOSS, Vec::new()),
            (22, Code::OK, b"last".to_vec()),
        ]
    );
}
