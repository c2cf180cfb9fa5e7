//! Test certificates, made with rcgen into a fresh temporary directory: a CA, a second
//! unrelated CA, server certificates for 127.0.0.1 and localhost, client certificates with a
//! given CN, expired ones. Every certificate and key is kept both as a PEM file and as PEM
//! bytes; the directory is removed when the [`TestPki`] is dropped.

use std::path::{Path, PathBuf};

use courier_rpc::tls::{ClientTlsConfig, ServerTlsConfig};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::TempDir;

/// The CN of [`TestPki::expired_client`].
pub const EXPIRED_CN: &str = "expired";
/// The CN of [`TestPki::stranger`], a client certificate from the other CA.
pub const STRANGER_CN: &str = "stranger";

/// One PEM file: its path and its bytes.
#[derive(Clone, Debug)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// A certificate and its private key (PKCS#8), as PEM files.
#[derive(Clone, Debug)]
pub struct CertKey {
    /// The subject's CN (or the file stem for a subject without one).
    pub name: String,
    pub cert: PemFile,
    pub key: PemFile,
}

/// A set of test certificates in a temporary directory.
pub struct TestPki {
    dir: TempDir,
    ca_issuer: CertifiedIssuer<'static, KeyPair>,
    other_issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA every certificate below is signed by, unless said otherwise (ca.pem).
    pub ca: PemFile,
    /// A second CA, unrelated to `ca` (other-ca.pem).
    pub other_ca: PemFile,
    /// The server: SANs 127.0.0.1 and localhost, CN "server", signed by `ca`.
    pub server: CertKey,
    /// As `server`, but valid only from 2000-01-01 to 2001-01-01.
    pub expired_server: CertKey,
    /// As `server`, but signed by `other_ca`.
    pub other_server: CertKey,
    /// The client certificates asked for, in the order of their CNs, signed by `ca`.
    pub clients: Vec<CertKey>,
    /// A client certificate with CN [`EXPIRED_CN`], signed by `ca`, valid only from
    /// 2000-01-01 to 2001-01-01.
    pub expired_client: CertKey,
    /// A client certificate with CN [`STRANGER_CN`], signed by `other_ca`.
    pub stranger: CertKey,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// Generates a [`TestPki`] with a client certificate for each of `client_cns`.
pub fn generate(client_cns: &[&str]) -> TestPki {
    let dir = TempDir::new("tls");
    let (ca_issuer, ca) = make_ca("courier test CA", &dir.path().join("ca.pem"));
    let (other_issuer, other_ca) =
        make_ca("courier other test CA", &dir.path().join("other-ca.pem"));
    let server = sign(dir.path(), "server", &ca_issuer, server_params(), "server");
    let mut params = server_params();
    expire(&mut params);
    let expired_server = sign(dir.path(), "expired-server", &ca_issuer, params, "server");
    let other_server = sign(
        dir.path(),
        "other-server",
        &other_issuer,
        server_params(),
        "server",
    );
    let clients = client_cns
        .iter()
        .map(|cn| sign(dir.path(), cn, &ca_issuer, client_params(cn), cn))
        .collect();
    let mut params = client_params(EXPIRED_CN);
    expire(&mut params);
    let expired_client = sign(dir.path(), EXPIRED_CN, &ca_issuer, params, EXPIRED_CN);
    let stranger = sign(
        dir.path(),
        STRANGER_CN,
        &other_issuer,
        client_params(STRANGER_CN),
        STRANGER_CN,
    );
    TestPki {
        dir,
        ca_issuer,
        other_issuer,
        ca,
        other_ca,
        server,
        expired_server,
        other_server,
        clients,
        expired_client,
        stranger,
    }
}

impl TestPki {
    /// The temporary directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client certificate generated for `cn`. Panics if none was asked for.
    pub fn client(&self, cn: &str) -> &CertKey {
        self.clients
            .iter()
            .find(|c| c.name == cn)
            .unwrap_or_else(|| panic!("no client certificate for {cn:?} was generated"))
    }

    /// A new client certificate signed by `ca` with this subject (e.g. one with no CN),
    /// written as `<stem>.pem` and `<stem>.key`.
    pub fn client_with_subject(&self, stem: &str, subject: DistinguishedName) -> CertKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = subject;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        sign(self.dir(), stem, &self.ca_issuer, params, stem)
    }

    /// A new client certificate signed by `other_ca` with this CN, written as
    /// `other-<cn>.pem` and `other-<cn>.key`.
    pub fn other_client(&self, cn: &str) -> CertKey {
        let stem = format!("other-{cn}");
        sign(self.dir(), &stem, &self.other_issuer, client_params(cn), cn)
    }

    /// The server's TLS configuration (`server`), asking every client for a certificate from
    /// `ca` when `require_client_certificate`.
    pub fn server_config(&self, require_client_certificate: bool) -> ServerTlsConfig {
        let client_ca = require_client_certificate.then_some(self.ca.path.as_path());
        ServerTlsConfig::from_pem_files(&self.server.cert.path, &self.server.key.path, client_ca)
            .expect("server TLS configuration")
    }

    /// A client configuration trusting `ca`, with no client certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::builder()
            .ca_file(&self.ca.path)
            .build()
            .expect("client TLS configuration")
    }

    /// A client configuration trusting `ca` and presenting `client`'s certificate.
    pub fn client_config_as(&self, client: &CertKey) -> ClientTlsConfig {
        ClientTlsConfig::builder()
            .ca_file(&self.ca.path)
            .client_cert_files(&client.cert.path, &client.key.path)
            .build()
            .expect("client TLS configuration")
    }
}

fn make_ca(cn: &str, path: &Path) -> (CertifiedIssuer<'static, KeyPair>, PemFile) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let file = write(path, issuer.pem().into_bytes());
    (issuer, file)
}

fn server_params() -> CertificateParams {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// Valid only in 2000: long expired.
fn expire(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
}

fn sign(
    dir: &Path,
    stem: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    params: CertificateParams,
    name: &str,
) -> CertKey {
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    CertKey {
        name: name.to_owned(),
        cert: write(&dir.join(format!("{stem}.pem")), cert.pem().into_bytes()),
        key: write(
            &dir.join(format!("{stem}.key")),
            key.serialize_pem().into_bytes(),
        ),
    }
}

fn write(path: &Path, pem: Vec<u8>) -> PemFile {
    std::fs::write(path, &pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    PemFile {
        path: path.to_owned(),
        pem,
    }
}
