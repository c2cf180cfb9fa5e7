//! Configurations built from rcgen certificates, and handshakes between them in memory.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::*;

/// A CA that signs certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate (PEM) and its key (PKCS#8 PEM).
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn server(&self) -> Pair {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, "server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn client(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Moves TLS records between the two ends until both finish the handshake; the error
/// names the side that failed.
fn handshake(client: &mut Connection, server: &mut Connection) -> Result<(), String> {
    for _ in 0..20 {
        transfer(client, server).map_err(|e| format!("server: {e:?}"))?;
        transfer(server, client).map_err(|e| format!("client: {e:?}"))?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".to_owned())
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).expect("write_tls to a Vec");
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls from a slice");
        to.process_new_packets()?;
    }
    Ok(())
}

fn connect(
    client: &ClientTlsConfig,
    server: &ServerTlsConfig,
) -> (Result<(), String>, Connection, Connection) {
    let name = client.server_name_for("127.0.0.1".parse().expect("ip"));
    connect_raw(client.rustls().clone(), name, server)
}

fn connect_raw(
    client: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    server: &ServerTlsConfig,
) -> (Result<(), String>, Connection, Connection) {
    let mut c = Connection::Client(ClientConnection::new(client, name).expect("client"));
    let mut s = Connection::Server(ServerConnection::new(server.rustls().clone()).expect("server"));
    (handshake(&mut c, &mut s), c, s)
}

struct Fixture {
    ca: Ca,
    server: Pair,
}

fn fixture() -> Fixture {
    let ca = Ca::new("test CA");
    let server = ca.server();
    Fixture { ca, server }
}

fn server_config(f: &Fixture, client_ca: Option<&Ca>) -> ServerTlsConfig {
    let ca_pem = client_ca.map(Ca::pem);
    ServerTlsConfig::from_pem(
        f.server.cert.as_bytes(),
        f.server.key.as_bytes(),
        ca_pem.as_deref().map(str::as_bytes),
    )
    .expect("server config")
}

fn client_builder(f: &Fixture) -> ClientTlsBuilder {
    ClientTlsConfig::builder().ca_pem(f.ca.pem().as_bytes())
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "courier-tls-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn handshake_is_tls13_with_alpn_courier_and_the_ip_address_as_server_name() {
    let f = fixture();
    let server = server_config(&f, None);
    assert!(!server.requires_client_certificate());
    let client = client_builder(&f).build().expect("client config");
    assert_eq!(client.server_name(), None);
    let (result, c, s) = connect(&client, &server);
    result.expect("handshake");
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.alpn_protocol(), Some(ALPN));
    assert_eq!(s.alpn_protocol(), Some(ALPN));
    assert!(
        s.peer_certificates().is_none(),
        "no client certificate asked for"
    );
}

#[test]
fn configurations_offer_only_tls13_and_courier_alpn() {
    let f = fixture();
    let server = server_config(&f, None);
    assert_eq!(server.rustls().alpn_protocols, vec![b"courier/1".to_vec()]);
    let client = client_builder(&f).build().expect("client config");
    assert_eq!(client.rustls().alpn_protocols, vec![b"courier/1".to_vec()]);
}

#[test]
fn a_dns_server_name_is_checked_against_the_certificate() {
    let f = fixture();
    let server = server_config(&f, None);
    let good = client_builder(&f)
        .server_name("localhost")
        .build()
        .expect("client");
    assert_eq!(good.server_name(), Some("localhost"));
    connect(&good, &server).0.expect("localhost is a SAN");
    let bad = client_builder(&f)
        .server_name("other.example")
        .build()
        .expect("client");
    let err = connect(&bad, &server).0.expect_err("not a SAN");
    assert!(
        err.starts_with("client:") && err.contains("NotValidForName"),
        "{err}"
    );
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let f = fixture();
    let server = server_config(&f, None);
    let other = Ca::new("other CA");
    let client = ClientTlsConfig::builder()
        .ca_pem(other.pem().as_bytes())
        .build()
        .expect("client");
    let err = connect(&client, &server).0.expect_err("unknown issuer");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn mutual_tls_accepts_a_client_certificate_from_the_client_ca() {
    let f = fixture();
    let server = server_config(&f, Some(&f.ca));
    assert!(server.requires_client_certificate());
    let alice = f.ca.client("alice");
    let client = client_builder(&f)
        .client_cert_pem(alice.cert.as_bytes(), alice.key.as_bytes())
        .build()
        .expect("client");
    let (result, _c, s) = connect(&client, &server);
    result.expect("handshake");
    let certs = s.peer_certificates().expect("client certificate");
    let expected = pem::certs_from_pem(alice.cert.as_bytes(), "alice").expect("pem");
    assert_eq!(certs, &expected[..]);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_or_from_another_ca() {
    let f = fixture();
    let server = server_config(&f, Some(&f.ca));
    let anonymous = client_builder(&f).build().expect("client");
    let err = connect(&anonymous, &server).0.expect_err("no certificate");
    assert!(
        err.starts_with("server:") && err.contains("NoCertificatesPresented"),
        "{err}"
    );

    let other = Ca::new("other CA").client("mallory");
    let stranger = client_builder(&f)
        .client_cert_pem(other.cert.as_bytes(), other.key.as_bytes())
        .build()
        .expect("client");
    let err = connect(&stranger, &server).0.expect_err("unknown issuer");
    assert!(
        err.starts_with("server:") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn a_client_offering_other_alpn_fails_and_one_offering_none_is_accepted() {
    let f = fixture();
    let server = server_config(&f, None);
    let client = client_builder(&f).build().expect("client");
    let name = ServerName::try_from("localhost").expect("name");

    let mut other = (**client.rustls()).clone();
    other.alpn_protocols = vec![b"h2".to_vec()];
    let err = connect_raw(Arc::new(other), name.clone(), &server)
        .0
        .expect_err("no overlap");
    assert!(
        err.starts_with("server:") && err.contains("NoApplicationProtocol"),
        "{err}"
    );

    let mut none = (**client.rustls()).clone();
    none.alpn_protocols.clear();
    let (result, c, _s) = connect_raw(Arc::new(none), name, &server);
    result.expect("no ALPN is accepted");
    assert_eq!(c.alpn_protocol(), None);
}

#[test]
fn files_are_read_and_a_missing_file_is_named() {
    let f = fixture();
    let dir = temp_dir("files");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let cert = write("server.pem", &f.server.cert);
    let key = write("server.key", &f.server.key);
    let ca = write("ca.pem", &f.ca.pem());
    let alice = f.ca.client("alice");
    let alice_cert = write("alice.pem", &alice.cert);
    let alice_key = write("alice.key", &alice.key);

    let server = ServerTlsConfig::from_pem_files(&cert, &key, Some(&ca)).expect("server");
    let client = ClientTlsConfig::builder()
        .ca_file(&ca)
        .client_cert_files(&alice_cert, &alice_key)
        .build()
        .expect("client");
    connect(&client, &server).0.expect("handshake");

    let missing = dir.join("missing.pem");
    let err = ServerTlsConfig::from_pem_files(&missing, &key, None).expect_err("missing");
    assert!(
        matches!(&err, TlsError::Io { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = ClientTlsConfig::builder()
        .ca_file(&missing)
        .build()
        .expect_err("missing");
    assert!(
        matches!(&err, TlsError::Io { path, .. } if *path == missing),
        "{err:?}"
    );

    // A key file with no key in it; a certificate file with no certificate in it.
    let err = ServerTlsConfig::from_pem_files(&cert, &cert, None).expect_err("no key");
    assert!(
        matches!(&err, TlsError::NoPrivateKey { path: Some(p) } if *p == cert),
        "{err:?}"
    );
    let err = ServerTlsConfig::from_pem_files(&key, &key, None).expect_err("no cert");
    assert!(matches!(&err, TlsError::NoCertificates { .. }), "{err:?}");
    assert!(err.to_string().contains("server.key"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn errors_for_bad_input_name_it_and_never_print_a_key() {
    let f = fixture();
    let other = f.ca.server();
    // A key that does not match the certificate.
    let err = ServerTlsConfig::from_pem(f.server.cert.as_bytes(), other.key.as_bytes(), None)
        .expect_err("mismatched key");
    assert!(matches!(err, TlsError::Rustls(_)), "{err:?}");
    let err = ServerTlsConfig::from_pem(f.server.cert.as_bytes(), b"", None).expect_err("no key");
    assert!(
        matches!(err, TlsError::NoPrivateKey { path: None }),
        "{err:?}"
    );
    let truncated = &f.server.cert[..f.server.cert.len() - 30];
    let err = ServerTlsConfig::from_pem(truncated.as_bytes(), f.server.key.as_bytes(), None)
        .expect_err("truncated");
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");

    let err = ClientTlsConfig::builder().build().expect_err("no roots");
    assert!(matches!(err, TlsError::NoRoots), "{err:?}");
    let err = client_builder(&f)
        .server_name("not a name!")
        .build()
        .expect_err("bad name");
    assert!(
        matches!(&err, TlsError::BadServerName(n) if n == "not a name!"),
        "{err:?}"
    );

    let alice = f.ca.client("alice");
    let builder = client_builder(&f).client_cert_pem(alice.cert.as_bytes(), alice.key.as_bytes());
    let debug = format!("{builder:?}");
    let key_body = alice.key.lines().nth(1).expect("a base64 line");
    assert!(!debug.contains(key_body), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}
