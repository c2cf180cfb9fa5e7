//! The identity a client certificate proves.

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::x509::AttributeTypeAndValue;

use super::{Identity, IdentitySource};

/// The identity the client certificate `end_entity_der` (one DER-encoded X.509 certificate)
/// proves, with [`IdentitySource::Certificate`].
///
/// The name is the subject's first common name (CN, OID 2.5.4.3) as UTF-8: a UTF8String,
/// PrintableString, IA5String, NumericString or BMPString. When the subject has no CN, the
/// name is the whole subject as an RFC 4514 string: the relative distinguished names in
/// reverse of the certificate's order, joined by `,` (several values of one by `+`), each
/// `type=value` with the short type names (`OU=Ops,O=Example Corp`) or the dotted OID, and
/// the characters RFC 4514 Section 2.4 lists escaped with `\`; a value that is not a string
/// is `#` and the hex of its DER encoding.
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
        None => Some(rfc4514(subject)),
    }
}

/// The RFC 4514 (Section 2) string of a distinguished name.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let id = oid.to_id_string();
                    let kind = short_name(&id).map_or(id.clone(), str::to_string);
                    let value = match attribute_string(attribute) {
                        Some(text) => escape(&text),
                        None => {
                            let der = attribute.attr_value().to_der_vec().unwrap_or_default();
                            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{kind}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The attribute type names of RFC 4514 Section 3; others are written as dotted OIDs.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes a value as RFC 4514 Section 2.4 says: `"`, `+`, `,`, `;`, `<`, `>` and `\`
/// anywhere, a leading space or `#`, a trailing space, and NUL as `\00`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
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
    #[test]
    fn rfc4514_escapes_what_it_must() {
        assert_eq!(super::escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(super::escape(" #x "), "\\ #x\\ ");
        assert_eq!(super::escape("#x"), "\\#x");
        assert_eq!(super::escape("plain"), "plain");
    }

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
        assert_eq!(identity.name(), "OU=Ops,O=Example Corp");
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
