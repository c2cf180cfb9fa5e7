//! Helpers shared by the integration tests: servers on 127.0.0.1:0 and raw-socket utilities.
#![allow(dead_code)] // each test file uses a different subset

pub mod examples;
pub mod fake_server;
pub mod haproxy;
pub mod kv_process;
pub mod process;
pub mod tls;
pub mod tls_raw;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier_rpc::proto::{Decoder, Encoder, Frame, Metadata, Request, DEFAULT_MAX_BODY_LEN};
use courier_rpc::server::{RunningServer, Server, ServerBuilder};
use courier_rpc::service::Router;
use courier_rpc::{echo, kv};

/// How long a raw socket waits for the server before a test fails: generous, never hit on
/// success.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A router with the echo and kv services.
pub fn bundled_router() -> Router {
    let mut router = Router::new();
    echo::register(&mut router);
    kv::register(&mut router, Arc::new(kv::Store::new()));
    router
}

/// Starts a server on 127.0.0.1 with a free port; it stops when the value is dropped.
pub fn start(builder: ServerBuilder, router: Router) -> RunningServer {
    builder
        .addr("127.0.0.1:0".parse().expect("valid address"))
        .bind(router)
        .expect("bind 127.0.0.1:0")
        .spawn()
        .expect("spawn server thread")
}

/// Starts a server with every default and the bundled services.
pub fn start_default() -> RunningServer {
    start(Server::builder(), bundled_router())
}

/// A raw TCP connection with read and write timeouts.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Accepts one connection on `listener` within `limit`, polling, so that a fake server never
/// hangs on a client that does not come: `None` past the limit (`Duration::ZERO`: only a
/// connection already waiting). The stream is blocking, with `IO_TIMEOUT` read and write
/// timeouts and nodelay, as [`raw_connect`]'s.
pub fn accept_within(listener: &TcpListener, limit: Duration) -> Option<TcpStream> {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                stream.set_nodelay(true).expect("nodelay");
                return Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() >= limit {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Encodes one frame with the default limit.
pub fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    Encoder::new(u32::MAX)
        .encode(frame, &mut out)
        .expect("test frame encodes");
    out
}

/// A REQUEST frame with no deadline and no metadata.
pub fn request(request_id: u64, service: u16, method: u16, payload: &[u8]) -> Frame {
    Frame::Request(Request {
        request_id,
        service,
        method,
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Rewrites the header CRC of the frame at the start of `frame` after a test edited the header.
pub fn fix_header_crc(frame: &mut [u8]) {
    let crc = crc32fast::hash(&frame[..32]);
    frame[32..36].copy_from_slice(&crc.to_be_bytes());
}

/// Reads frames until the server closes the connection (or a read times out, which fails the
/// test). Returns every frame received. Works over a plain socket or a TLS stream.
pub fn read_until_close(stream: &mut impl Read) -> Vec<Frame> {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A reset after the server closed a connection with unread input still counts as
            // the close, and so does a TLS stream that ends without close_notify; everything
            // the server sent before is in `frames`.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                0
            }
            Err(e) => panic!("reading from the server: {e}"),
        };
        if n == 0 {
            assert!(
                buf.is_empty(),
                "server closed mid-frame: {} bytes left",
                buf.len()
            );
            return frames;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(frame) = decoder.decode(&mut buf).expect("server sends valid frames") {
            frames.push(frame);
        }
    }
}

/// Reads exactly `count` frames, over a plain socket or a TLS stream.
pub fn read_frames(stream: &mut impl Read, count: usize) -> Vec<Frame> {
    try_read_frames(stream, count).unwrap_or_else(|e| panic!("read from the server: {e}"))
}

/// Reads exactly `count` frames; the read's error, or `UnexpectedEof` when the server closes
/// first.
pub fn try_read_frames(stream: &mut impl Read, count: usize) -> std::io::Result<Vec<Frame>> {
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while frames.len() < count {
        while let Some(frame) = decoder.decode(&mut buf).expect("server sends valid frames") {
            frames.push(frame);
        }
        if frames.len() >= count {
            break;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("server closed after {} of {count} frames", frames.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(buf.is_empty(), "unexpected bytes after {count} frames");
    Ok(frames)
}

/// The value of the counter `name` of an in-process server.
pub fn counter(server: &RunningServer, name: &str) -> u64 {
    server
        .stats()
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(|| panic!("no counter {name}"), |(_, v)| v)
}

/// Polls the counter `name` of an in-process server until it is at least `at_least`, for at
/// most 20 s; returns its last value. Tests assert on the value, not on how long it took.
pub fn wait_for_counter(server: &RunningServer, name: &str, at_least: u64) -> u64 {
    let start = Instant::now();
    loop {
        let value = counter(server, name);
        if value >= at_least || start.elapsed() > Duration::from_secs(20) {
            return value;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends raw bytes.
pub fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("write to the server");
}

/// Asserts that the server still serves a fresh client: one echo round trip.
pub fn assert_serving(addr: SocketAddr) {
    let mut client = courier_rpc::client::Client::connect(addr).expect("connect a fresh client");
    let reply = client
        .call(&echo::ECHO, &Bytes::from_static(b"still here"))
        .expect("echo from a fresh client");
    assert_eq!(&reply[..], b"still here");
}

/// An echo REQUEST frame, encoded.
pub fn echo_request(request_id: u64, payload: &[u8]) -> BytesMut {
    encode(&request(
        request_id,
        echo::ECHO.service,
        echo::ECHO.method,
        payload,
    ))
}

/// A valid echo REQUEST header whose body length field claims `body_len` bytes, with its
/// header CRC recomputed. No body follows.
pub fn header_claiming(request_id: u64, body_len: u32) -> Vec<u8> {
    let mut frame = echo_request(request_id, b"").to_vec();
    assert_eq!(
        frame.len(),
        courier_rpc::proto::HEADER_LEN,
        "an empty request is a bare header"
    );
    frame[24..28].copy_from_slice(&body_len.to_be_bytes());
    fix_header_crc(&mut frame);
    frame
}

/// Asserts that `frames` is exactly one ERROR frame with `code` for `request_id`; returns its
/// message.
pub fn expect_single_error(
    frames: &[Frame],
    request_id: u64,
    code: courier_rpc::proto::Code,
) -> String {
    match frames {
        [Frame::Error {
            request_id: got_id,
            code: got_code,
            message,
        }] => {
            assert_eq!(*got_code, code, "ERROR status (message: {message:?})");
            assert_eq!(
                *got_id, request_id,
                "ERROR request id (message: {message:?})"
            );
            message.clone()
        }
        other => panic!("expected exactly one ERROR {code:?} before the close, got {other:?}"),
    }
}

/// A realistic TLS 1.2 ClientHello record (SNI "localhost", four suites, three more
/// extensions), with every length field computed.
pub fn tls_client_hello() -> Vec<u8> {
    let mut extensions = Vec::new();
    // server_name: list of one host_name entry.
    let host = b"localhost";
    extensions.extend_from_slice(&[0x00, 0x00]);
    extensions.extend_from_slice(&((host.len() + 5) as u16).to_be_bytes());
    extensions.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    extensions.push(0x00);
    extensions.extend_from_slice(&(host.len() as u16).to_be_bytes());
    extensions.extend_from_slice(host);
    // supported_groups: x25519, secp256r1.
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed.
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: rsa_pkcs1_sha256, ecdsa_secp256r1_sha256.
    extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x04, 0x03]);

    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    hello.push(0x00); // session id: empty
    let suites = [0xc0, 0x2f, 0xc0, 0x2b, 0x00, 0x9c, 0x00, 0x2f];
    hello.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    hello.extend_from_slice(&suites);
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null only
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 record version
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The server's counters, asked for over a fresh connection with the admin STATS request.
pub fn stats(addr: SocketAddr) -> courier_rpc::admin::StatsReport {
    let mut client = courier_rpc::client::Client::connect(addr).expect("connect for STATS");
    client
        .call(&courier_rpc::admin::STATS, &())
        .expect("STATS answered")
}

/// Polls the server's counters until `done` holds for them, for at most `limit`; returns
/// the last report. Tests assert on the counters, not on how long they took.
pub fn wait_for_stats(
    addr: SocketAddr,
    limit: Duration,
    done: impl Fn(&courier_rpc::admin::StatsReport) -> bool,
) -> courier_rpc::admin::StatsReport {
    let start = std::time::Instant::now();
    loop {
        let report = stats(addr);
        if done(&report) || start.elapsed() > limit {
            return report;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's soft limit on open files to its hard limit, for tests that open
/// thousands of sockets (both ends live in the test process). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// File descriptors this process has open now (Linux: the entries of /proc/self/fd).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

// ---- hostile-client suite helpers (tests/hostile*.rs) ----

/// A client kept open for STATS requests, so that polling the counters opens and closes no
/// connection of its own (which would move `closed_peer` and `connections_open`). It counts
/// as one open connection for as long as it lives.
pub fn hostile_stats_client(addr: SocketAddr) -> courier_rpc::client::Client {
    courier_rpc::client::Client::connect(addr).expect("connect the STATS client")
}

/// The server's counters, asked for on `client` (see [`hostile_stats_client`]).
pub fn hostile_stats(client: &mut courier_rpc::client::Client) -> courier_rpc::admin::StatsReport {
    client
        .call(&courier_rpc::admin::STATS, &())
        .expect("STATS answered on the STATS client")
}

/// [`wait_for_stats`] over one kept-open STATS client: polls until `done` holds or `limit`
/// passes, and returns the last report.
pub fn hostile_wait_for_stats(
    client: &mut courier_rpc::client::Client,
    limit: Duration,
    done: impl Fn(&courier_rpc::admin::StatsReport) -> bool,
) -> courier_rpc::admin::StatsReport {
    let start = std::time::Instant::now();
    loop {
        let report = hostile_stats(client);
        if done(&report) || start.elapsed() > limit {
            return report;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets SO_LINGER {on, 0 s} on `stream`, so that dropping it sends a reset instead of a FIN.
pub fn hostile_set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open for the duration of the call (borrowed from `stream`), and
    // `linger` is a valid `struct linger` whose exact size is passed as the option length.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

/// A new store and its kv log in `dir`, opened with `fsync` and every other default.
pub fn open_kv_log(
    dir: &std::path::Path,
    fsync: kv::log::FsyncPolicy,
) -> (Arc<kv::Store>, Arc<kv::log::Log>) {
    let store = Arc::new(kv::Store::new());
    let config = kv::log::LogConfig {
        dir: dir.to_owned(),
        fsync,
        ..kv::log::LogConfig::default()
    };
    let (log, _) = kv::log::Log::open(config, &store).expect("open the kv log");
    (store, log)
}

/// A fresh directory under the system's temporary directory, removed (with its contents)
/// when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new empty directory whose name has `tag`, the process id and a counter.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("courier-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
