//! A TLS client nobody here wrote: `openssl s_client` completes the handshake with the
//! server (TLS 1.3, ALPN courier/1, the server's chain verified), sends a courier PING
//! through it and gets the PONG; with mutual TLS required, it is refused without a
//! certificate and served with one. `.ci/run` installs openssl.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use courier_rpc::proto::Frame;
use courier_rpc::server::Server;

/// Runs `openssl s_client` against `port` with `extra` arguments, writing a PING (id 7) and
/// keeping stdin open a moment so the answer arrives before it closes.
fn s_client(port: u16, ca: &str, extra: &[&str]) -> Output {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-alpn",
            "courier/1",
            "-tls1_3",
            "-CAfile",
            ca,
            "-verify_return_error",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (install openssl)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&support::encode(&Frame::Ping(7)))
        .expect("write the PING");
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    child.wait_with_output().expect("s_client output")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn openssl_s_client_negotiates_courier_1_and_gets_a_pong() {
    let pki = support::tls::generate(&["ops"]);
    let server = support::start(
        Server::builder().tls(pki.server_config(false)),
        support::bundled_router(),
    );
    let ca = pki.ca.path.to_str().expect("UTF-8 path");
    let out = s_client(server.local_addr().port(), ca, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ALPN protocol: courier/1"), "{stdout}");
    assert!(stdout.contains("TLSv1.3"), "{stdout}");
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    let pong = support::encode(&Frame::Pong(7));
    assert!(contains(&out.stdout, &pong), "no PONG in: {stdout}");
}

#[test]
fn openssl_s_client_needs_a_certificate_when_mutual_tls_is_required() {
    let pki = support::tls::generate(&["ops"]);
    let server = support::start(
        Server::builder().tls(pki.server_config(true)),
        support::bundled_router(),
    );
    let port = server.local_addr().port();
    let ca = pki.ca.path.to_str().expect("UTF-8 path");
    let pong = support::encode(&Frame::Pong(7));

    let refused = s_client(port, ca, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !contains(&refused.stdout, &pong),
        "answered without a certificate"
    );
    assert!(text.contains("certificate required"), "{text}");

    let client = pki.client("ops");
    let cert = client.cert.path.to_str().expect("UTF-8 path");
    let key = client.key.path.to_str().expect("UTF-8 path");
    let served = s_client(port, ca, &["-cert", cert, "-key", key]);
    assert!(
        contains(&served.stdout, &pong),
        "{}",
        String::from_utf8_lossy(&served.stdout)
    );
}
