//! The client certificate of a request, for certificate-bound tokens (RFC 8705 §3): its
//! SHA-256 digest (of the DER), which `cnf["x5t#S256"]` names in base64url.
//!
//! - **gRPC ext_authz.** `attributes.source.certificate`: the leaf Envoy verified, as
//!   URL-encoded PEM (`include_peer_certificate: true`). It comes from Envoy itself over
//!   the ext_authz channel, so it is always believed.
//! - **`X-Forwarded-Client-Cert`**, on any listener, only when
//!   `trusted_proxy_headers.x_forwarded_client_cert` is on (the proxy in front must
//!   sanitise it: Envoy's `forward_client_cert_details: SANITIZE_SET`). Exactly one field
//!   with exactly one element, whose `Hash` (hex SHA-256 of the DER) and `Cert` (quoted,
//!   URL-encoded PEM) must agree when both are there. Anything else — two fields, two
//!   elements (a chain of proxies, or a client's own element appended to), a repeated
//!   key, bad hex or PEM — yields no certificate, so a bound token is refused.
//!
//! The XFCC grammar is Envoy's (elements split at unquoted `,`, pairs at unquoted `;`,
//! values optionally double-quoted with `\"` escapes). No maintained crate parses it
//! (`xfcc-parser` 0.2 brings nom and strum for this, and does not URL-decode), so the
//! few lines here read only what is needed and refuse everything unusual.

use aws_lc_rs::digest;

use crate::request::Peer;
use crate::token::extract::Headers;

/// The XFCC header.
pub const XFCC: &str = "x-forwarded-client-cert";

/// The SHA-256 of the request's client certificate: from the ext_authz peer, else from
/// a trusted XFCC header. `None`: no certificate, or one that cannot be read.
pub fn certificate_digest<H: Headers + ?Sized>(
    peer: &Peer<'_>,
    headers: &H,
    trust_xfcc: bool,
) -> Option<[u8; 32]> {
    if let Some(pem) = peer.certificate {
        return pem_digest(pem);
    }
    if !trust_xfcc {
        return None;
    }
    let mut values = Vec::with_capacity(1);
    headers.for_each(XFCC, &mut |v| values.push(v));
    match values.as_slice() {
        [one] => std::str::from_utf8(one).ok().and_then(xfcc_digest),
        _ => None,
    }
}

/// The digest an XFCC value names (see the module docs).
fn xfcc_digest(value: &str) -> Option<[u8; 32]> {
    let elements = split_unquoted(value, b',')?;
    let [element] = elements.as_slice() else {
        return None;
    };
    let (mut hash, mut cert) = (None, None);
    for pair in split_unquoted(element, b';')? {
        let (key, raw) = pair.split_once('=')?;
        let key = key.trim();
        let slot = if key.eq_ignore_ascii_case("hash") {
            &mut hash
        } else if key.eq_ignore_ascii_case("cert") {
            &mut cert
        } else {
            continue;
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(unquote(raw.trim())?);
    }
    let from_hash = match &hash {
        Some(h) => Some(hex_digest(h)?),
        None => None,
    };
    let from_cert = match &cert {
        Some(c) => Some(pem_digest(c)?),
        None => None,
    };
    match (from_hash, from_cert) {
        (Some(h), Some(c)) => (h == c).then_some(h),
        (h, c) => h.or(c),
    }
}

/// The SHA-256 of the DER of a URL-encoded PEM certificate.
fn pem_digest(url_encoded: &str) -> Option<[u8; 32]> {
    let pem: Vec<u8> = percent_encoding::percent_decode_str(url_encoded).collect();
    let (rest, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    if pem.label != "CERTIFICATE" || !rest.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let d = digest::digest(&digest::SHA256, &pem.contents);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Some(out)
}

/// 64 hex digits.
fn hex_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// `value` split at each `sep` outside double quotes; `None` when a quote is left open.
fn split_unquoted(value: &str, sep: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(value.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(value.get(start..)?);
    Some(parts)
}

/// A value, without its quotes and escapes when quoted.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.contains('"')).then(|| v.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 certificate (`openssl req -x509`).
    /// The hex SHA-256 of its DER (`openssl x509 -outform DER | sha256sum`).
    const CERT_SHA256: &str = "44d818a84dd535592965e4fc02e6276069972cd447623eda9735af34905b3969";
    const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBgjCCASegAwIBAgIUd7mFBIplo/lhaEVAP5Eu0Ss3m/QwCgYIKoZIzj0EAwIw\nFjEUMBIGA1UEAwwLdGVzdC1jbGllbnQwHhcNMjYxMjAzMDcyOTEwWhcNMzYxMTMw\nMDcyOTEwWjAWMRQwEgYDVQQDDAt0ZXN0LWNsaWVudDBZMBMGByqGSM49AgEGCCqG\nSM49AwEHA0IABMoxFpea2klZ9TseEeU9old39/Gi+ckpG+LotPHD2jd/PQaNvE4M\nV5VjXnOb2fhMXuqJRiOnmjzeXLhUIe+i7kOjUzBRMB0GA1UdDgQWBBRPPJU3XQOn\nTBw0EQGUoDBv7h/B1jAfBgNVHSMEGDAWgBRPPJU3XQOnTBw0EQGUoDBv7h/B1jAP\nBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCRlIoEtNgiQN6L7Or8\nIjHC/x5gx/PVNUihH8BJ69ukewIhAM58hhLvpVTVgLtYdplCdwrkCiKIveluKEed\nREJhpfXf\n-----END CERTIFICATE-----\n";

    fn url_encoded(pem: &str) -> String {
        pem.replace('\n', "%0A")
            .replace(' ', "%20")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    }

    fn der_digest_hex() -> String {
        let der = pem_digest(&url_encoded(CERT_PEM)).expect("the test certificate reads");
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, CERT_SHA256,
            "the digest of the DER, as openssl computes it"
        );
        hex
    }

    fn xfcc(value: &str) -> Option<[u8; 32]> {
        let headers = vec![(XFCC.to_string(), value.to_string())];
        certificate_digest(&Peer::default(), headers.as_slice(), true)
    }

    #[test]
    fn hash_and_cert_name_the_same_digest() {
        let hex = der_digest_hex();
        let cert = url_encoded(CERT_PEM);
        let want = hex_digest(&hex);
        assert!(want.is_some());
        assert_eq!(xfcc(&format!("Hash={hex}")), want);
        assert_eq!(xfcc(&format!("Cert=\"{cert}\"")), want);
        assert_eq!(
            xfcc(&format!(
                "By=spiffe://tokengate.test/envoy;Hash={hex};Cert=\"{cert}\";Subject=\"CN=a,O=b\";URI=spiffe://x"
            )),
            want
        );
        assert_eq!(xfcc(&format!("hash={}", hex.to_uppercase())), want);
    }

    #[test]
    fn anything_unusual_yields_no_certificate() {
        let hex = der_digest_hex();
        let cert = url_encoded(CERT_PEM);
        let other = "ab".repeat(32);
        for value in [
            format!("Hash={hex},Hash={hex}"),
            format!("Hash={other};Cert=\"{cert}\""),
            format!("Hash={hex};Hash={hex}"),
            format!("Hash={}", &hex[..62]),
            format!("Hash={hex}zz"),
            format!("Cert=\"{cert}"),
            "Cert=\"not a pem\"".to_string(),
            "By=spiffe://x".to_string(),
            String::new(),
        ] {
            assert_eq!(xfcc(&value), None, "{value:?}");
        }
        // Two fields.
        let headers = vec![
            (XFCC.to_string(), format!("Hash={hex}")),
            (XFCC.to_string(), format!("Hash={hex}")),
        ];
        assert_eq!(
            certificate_digest(&Peer::default(), headers.as_slice(), true),
            None
        );
        // Not believed unless trusted.
        let headers = vec![(XFCC.to_string(), format!("Hash={hex}"))];
        assert_eq!(
            certificate_digest(&Peer::default(), headers.as_slice(), false),
            None
        );
    }

    #[test]
    fn the_ext_authz_peer_certificate_wins_over_any_header() {
        let cert = url_encoded(CERT_PEM);
        let peer = Peer {
            certificate: Some(&cert),
            ..Peer::default()
        };
        let headers = vec![(XFCC.to_string(), format!("Hash={}", "ab".repeat(32)))];
        assert_eq!(
            certificate_digest(&peer, headers.as_slice(), true),
            hex_digest(&der_digest_hex())
        );
    }
}
