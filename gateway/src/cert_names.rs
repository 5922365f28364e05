//! Names a certificate carries in its subjectAltName extension, compared with the names a
//! policy asks for (DestinationRule / BackendTLSPolicy `subjectAltNames` for servers, Istio
//! server `subjectAltNames` for clients).

use rustls::pki_types::CertificateDer;

/// Whether the certificate's SAN extension lists one of `names` exactly.
pub fn carries_one_of(cert: &CertificateDer<'_>, names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|name| {
        let text = match name {
            GeneralName::DNSName(dns) => dns.to_string(),
            GeneralName::URI(uri) => uri.to_string(),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())
                    .to_string(),
                16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())
                    .to_string(),
                _ => return false,
            },
            _ => return false,
        };
        names
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(&text))
    })
}
