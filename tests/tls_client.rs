//! The blocking client over TLS against small rustls servers on threads, and the test
//! certificates of `support::tls`.

mod support;

use std::sync::Arc;

use courier::tls::{ClientTlsConfig, ServerTlsConfig};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use support::tls::{generate, EXPIRED_CN, STRANGER_CN};

/// Moves TLS records between two in-memory ends until both finish the handshake; the error
/// is the side that failed and its rustls error.
fn handshake_in_memory(client: &ClientTlsConfig, server: &ServerTlsConfig) -> Result<(), String> {
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut c = Connection::Client(
        ClientConnection::new(Arc::clone(client.rustls()), name).expect("client"),
    );
    let mut s =
        Connection::Server(ServerConnection::new(Arc::clone(server.rustls())).expect("server"));
    for _ in 0..20 {
        transfer(&mut c, &mut s).map_err(|e| format!("server: {e:?}"))?;
        transfer(&mut s, &mut c).map_err(|e| format!("client: {e:?}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
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

#[test]
fn test_certificates_verify_as_they_say() {
    let pki = generate(&["alice", "bob"]);
    assert_eq!(pki.client("bob").name, "bob");
    for file in [&pki.ca, &pki.other_ca, &pki.server.cert, &pki.server.key] {
        assert_eq!(std::fs::read(&file.path).expect("read"), file.pem);
    }
    let mtls = pki.server_config(true);
    handshake_in_memory(&pki.client_config_as(pki.client("alice")), &mtls).expect("alice");
    handshake_in_memory(&pki.client_config(), &pki.server_config(false)).expect("no client cert");

    let err = handshake_in_memory(&pki.client_config(), &mtls).expect_err("no certificate");
    assert!(err.contains("NoCertificatesPresented"), "{err}");
    assert_eq!(pki.expired_client.name, EXPIRED_CN);
    let err = handshake_in_memory(&pki.client_config_as(&pki.expired_client), &mtls)
        .expect_err("expired client");
    assert!(
        err.starts_with("server:") && err.contains("Expired"),
        "{err}"
    );
    assert_eq!(pki.stranger.name, STRANGER_CN);
    let err =
        handshake_in_memory(&pki.client_config_as(&pki.stranger), &mtls).expect_err("other CA");
    assert!(
        err.starts_with("server:") && err.contains("UnknownIssuer"),
        "{err}"
    );

    let expired = ServerTlsConfig::from_pem(
        &pki.expired_server.cert.pem,
        &pki.expired_server.key.pem,
        None,
    )
    .expect("config");
    let err = handshake_in_memory(&pki.client_config(), &expired).expect_err("expired server");
    assert!(
        err.starts_with("client:") && err.contains("Expired"),
        "{err}"
    );
    let other = ServerTlsConfig::from_pem_files(
        &pki.other_server.cert.path,
        &pki.other_server.key.path,
        None,
    )
    .expect("config");
    let err = handshake_in_memory(&pki.client_config(), &other).expect_err("other CA");
    assert!(
        err.starts_with("client:") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let trusting_other = ClientTlsConfig::builder()
        .ca_pem(&pki.other_ca.pem)
        .build()
        .expect("config");
    handshake_in_memory(&trusting_other, &other).expect("other CA trusted");

    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::OrganizationName, "courier tests");
    let no_cn = pki.client_with_subject("no-cn", subject);
    handshake_in_memory(&pki.client_config_as(&no_cn), &mtls).expect("no CN is still valid");
    let dir = pki.dir().to_owned();
    assert!(dir.join("no-cn.pem").exists());
    drop(pki);
    assert!(!dir.exists(), "removed on drop");
}
