//! What kube-controller-manager requires of a CSR for the two kubelet signers, as pure checks: the
//! csrapproving controller auto-approves a `kube-apiserver-client-kubelet` CSR only when it is a valid
//! kubelet client request (otherwise it leaves it pending: it never denies), and the signers refuse
//! an approved request that is not valid for them (Failed/SignerValidationFailure).
//!
//! Both need subject O exactly `[system:nodes]` and CN starting with `system:node:`; a client request
//! carries no DNS, IP, email or URI SANs, a serving one at least one DNS or IP SAN and no email or
//! URI ones; usages are exactly {digital signature, client|server auth}, optionally with key
//! encipherment.

use std::collections::BTreeSet;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

/// The parts of a certificate request the kubelet signers look at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CsrContents {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns: usize,
    pub ips: usize,
    pub emails: usize,
    pub uris: usize,
}

/// Parses a PEM `CERTIFICATE REQUEST`.
pub fn parse(pem: &[u8]) -> Result<CsrContents, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, req) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("unable to parse csr: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let text = |v: &x509_parser::x509::AttributeTypeAndValue| {
        v.as_str().map(str::to_string).unwrap_or_default()
    };
    let mut out = CsrContents {
        common_name: subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: subject.iter_organization().map(text).collect(),
        ..CsrContents::default()
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(_) => out.dns += 1,
                GeneralName::IPAddress(_) => out.ips += 1,
                GeneralName::RFC822Name(_) => out.emails += 1,
                GeneralName::URI(_) => out.uris += 1,
                _ => {}
            }
        }
    }
    Ok(out)
}

fn node_subject(c: &CsrContents) -> Result<(), String> {
    if c.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    Ok(())
}

fn node_common_name(c: &CsrContents) -> Result<(), String> {
    if !c.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

/// Usages exactly `{digital signature, <auth>}` or `{digital signature, key encipherment, <auth>}`.
fn exact_usages(usages: &[&str], auth: &str) -> Result<(), String> {
    let got: BTreeSet<&str> = usages.iter().copied().collect();
    let short: BTreeSet<&str> = ["digital signature", auth].into();
    let long: BTreeSet<&str> = ["digital signature", "key encipherment", auth].into();
    if got != short && got != long {
        return Err(format!("usages did not match {long:?}"));
    }
    Ok(())
}

/// A valid `kubernetes.io/kube-apiserver-client-kubelet` request, or why not.
pub fn validate_client(c: &CsrContents, usages: &[&str]) -> Result<(), String> {
    node_subject(c)?;
    for (n, kind) in [
        (c.dns, "DNS"),
        (c.emails, "Email"),
        (c.ips, "IP"),
        (c.uris, "URI"),
    ] {
        if n > 0 {
            return Err(format!("{kind} subjectAltNames are not allowed"));
        }
    }
    node_common_name(c)?;
    exact_usages(usages, "client auth")
}

/// A valid `kubernetes.io/kubelet-serving` request, or why not.
pub fn validate_serving(c: &CsrContents, usages: &[&str]) -> Result<(), String> {
    node_subject(c)?;
    if c.dns == 0 && c.ips == 0 {
        return Err("DNS or IP subjectAltName is required".into());
    }
    for (n, kind) in [(c.emails, "Email"), (c.uris, "URI")] {
        if n > 0 {
            return Err(format!("{kind} subjectAltNames are not allowed"));
        }
    }
    exact_usages(usages, "server auth")?;
    node_common_name(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];
    const SERVING: &[&str] = &["digital signature", "server auth"];

    fn node() -> CsrContents {
        CsrContents {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            ..CsrContents::default()
        }
    }

    #[test]
    fn parses_subject_and_sans() {
        let mut p = CertificateParams::new(vec!["n1".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        p.subject_alt_names.extend([
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::Rfc822Name("a@b.c".try_into().unwrap()),
            SanType::URI("spiffe://x".try_into().unwrap()),
        ]);
        let pem = p
            .serialize_request(&KeyPair::generate().unwrap())
            .unwrap()
            .pem()
            .unwrap();
        let c = parse(pem.as_bytes()).unwrap();
        assert_eq!(c.common_name, "system:node:n1");
        assert_eq!(c.organizations, ["system:nodes"]);
        assert_eq!((c.dns, c.ips, c.emails, c.uris), (1, 1, 1, 1));
        assert!(parse(b"not pem").is_err());
    }

    #[test]
    fn client_rules() {
        assert_eq!(validate_client(&node(), CLIENT), Ok(()));
        assert_eq!(
            validate_client(&node(), &["client auth", "digital signature"]),
            Ok(())
        );
        let bad_usages: [&[&str]; 3] = [
            &["client auth"],
            &[
                "digital signature",
                "key encipherment",
                "client auth",
                "server auth",
            ],
            &["digital signature", "key encipherment", "server auth"],
        ];
        for u in bad_usages {
            assert!(validate_client(&node(), u).is_err(), "{u:?}");
        }
        let mut groups = node();
        groups.organizations.push("system:masters".into());
        let mut none = node();
        none.organizations.clear();
        let mut cn = node();
        cn.common_name = "alice".into();
        let mut dns = node();
        dns.dns = 1;
        let mut ip = node();
        ip.ips = 1;
        let mut email = node();
        email.emails = 1;
        let mut uri = node();
        uri.uris = 1;
        for c in [groups, none, cn, dns, ip, email, uri] {
            assert!(validate_client(&c, CLIENT).is_err(), "{c:?}");
        }
    }

    #[test]
    fn serving_rules() {
        let mut ok = node();
        ok.ips = 1;
        assert_eq!(validate_serving(&ok, SERVING), Ok(()));
        assert_eq!(
            validate_serving(&node(), SERVING),
            Err("DNS or IP subjectAltName is required".into())
        );
        assert!(validate_serving(&ok, CLIENT).is_err());
        let mut email = ok.clone();
        email.emails = 1;
        let mut cn = ok.clone();
        cn.common_name = "bob".into();
        for c in [email, cn] {
            assert!(validate_serving(&c, SERVING).is_err(), "{c:?}");
        }
    }
}
