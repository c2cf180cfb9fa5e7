//! The identity a client certificate proves.

use x509_parser::certificate::X509Certificate;
use x509_parser::objects::oid_registry;
use x509_parser::x509::AttributeTypeAndValue;

use super::{Identity, IdentitySource};

/// The identity the client certificate `end_entity_der` (one DER-encoded X.509 certificate)
/// proves, with [`IdentitySource::Certificate`].
///
/// The name is the subject's first common name (CN, OID 2.5.4.3) as UTF-8: a UTF8String,
/// PrintableString, IA5String, NumericString or BMPString. When the subject has no CN, the
/// name is the whole subject as a string in the style of RFC 4514, as x509-parser displays
/// it: `type=value` pairs with the RFC 4514 short names (`O=Example Corp, OU=Ops`), in the
/// certificate's order (RFC 4514 reverses it), without RFC 4514's escaping.
///
/// `None` when `end_entity_der` is not exactly one certificate x509-parser can parse, when the
/// first CN is not one of those string types, or when the name would be empty.
///
/// This only reads the certificate: the caller must have verified it (during the TLS
/// handshake, against the trusted client CAs) before trusting the identity. Whoever those CAs
/// let put a CN into a certificate can take the name, the same name an ACL entry's token
/// proves.
pub fn certificate_identity(end_entity_der: &[u8]) -> Option<Identity> {
    let (rest, certificate) = x509_parser::parse_x509_certificate(end_entity_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let name = subject_name(&certificate)?;
    if name.is_empty() {
        return None;
    }
    Some(Identity::new(name, IdentitySource::Certificate))
}

fn subject_name(certificate: &X509Certificate<'_>) -> Option<String> {
    let subject = certificate.subject();
    match subject.iter_common_name().next() {
        Some(cn) => attribute_string(cn),
        None => subject.to_string_with_registry(oid_registry()).ok(),
    }
}

fn attribute_string(attribute: &AttributeTypeAndValue<'_>) -> Option<String> {
    match attribute.as_str() {
        Ok(text) => Some(text.to_owned()),
        Err(_) => attribute
            .attr_value()
            .as_bmpstring()
            .ok()
            .map(|text| text.string()),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn certificate(subject: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        let mut name = DistinguishedName::new();
        for (kind, value) in subject {
            name.push(kind.clone(), *value);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_name_is_the_common_name() {
        let der = certificate(&[
            (DnType::OrganizationName, "Example Corp"),
            (DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            certificate_identity(&der),
            Some(Identity::new("alice", IdentitySource::Certificate))
        );
    }

    #[test]
    fn without_a_common_name_the_name_is_the_subject() {
        let der = certificate(&[
            (DnType::OrganizationName, "Example Corp"),
            (DnType::OrganizationalUnitName, "Ops"),
        ]);
        let identity = certificate_identity(&der).expect("an identity");
        assert_eq!(identity.source(), IdentitySource::Certificate);
        assert_eq!(identity.name(), "O=Example Corp, OU=Ops");
    }

    #[test]
    fn no_name_at_all_is_no_identity() {
        assert_eq!(certificate_identity(&certificate(&[])), None);
        assert_eq!(
            certificate_identity(&certificate(&[(DnType::CommonName, "")])),
            None
        );
    }

    #[test]
    fn garbage_is_no_identity() {
        let der = certificate(&[(DnType::CommonName, "alice")]);
        assert_eq!(certificate_identity(&[]), None);
        assert_eq!(certificate_identity(b"not a certificate"), None);
        assert_eq!(certificate_identity(&der[..der.len() - 1]), None);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(certificate_identity(&trailing), None);
    }
}
