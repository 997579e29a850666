//! The pure half of node certificates: what a node's certificate must say ([`Wanted`]), a fresh ECDSA
//! P-256 key with its PKCS#10 request, what an issued certificate does say ([`Issued`]), whether that is
//! still good enough, and when to rotate it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Group every node identity carries (the certificate's O).
pub const NODES_GROUP: &str = "system:nodes";

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("generating a key or request failed")]
    Generate(#[source] rcgen::Error),
    #[error("the PEM holds no certificate")]
    NoCertificate,
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
}

/// Which of a node's two certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// Client certificate: the node's API identity (`system:node:<name>`).
    Client,
    /// Serving certificate of the node's kubelet endpoint.
    Serving,
}

impl CertKind {
    /// `client` / `serving`: label values and name parts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Serving => "serving",
        }
    }

    /// The certificates.k8s.io signer.
    pub fn signer(self) -> &'static str {
        match self {
            Self::Client => "kubernetes.io/kube-apiserver-client-kubelet",
            Self::Serving => "kubernetes.io/kubelet-serving",
        }
    }

    /// The exact usages requested (kube-controller-manager auto-approves client CSRs only with these).
    pub fn usages(self) -> [&'static str; 3] {
        match self {
            Self::Client => ["digital signature", "key encipherment", "client auth"],
            Self::Serving => ["digital signature", "key encipherment", "server auth"],
        }
    }
}

/// What a node's certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub kind: CertKind,
    /// Node name: the subject is `CN=system:node:<node>, O=system:nodes`.
    pub node: String,
    /// Serving only: the IP addresses the Node advertises.
    pub ips: Vec<IpAddr>,
    /// Serving only: the DNS names the Node advertises (its hostname).
    pub dns: Vec<String>,
}

impl Wanted {
    pub fn client(node: &str) -> Self {
        Self {
            kind: CertKind::Client,
            node: node.into(),
            ips: vec![],
            dns: vec![],
        }
    }

    pub fn serving(node: &str, ips: Vec<IpAddr>, dns: Vec<String>) -> Self {
        Self {
            kind: CertKind::Serving,
            node: node.into(),
            ips,
            dns,
        }
    }

    /// `system:node:<node>`.
    pub fn common_name(&self) -> String {
        format!("system:node:{}", self.node)
    }
}

/// A fresh key and the PEM certificate request for `wanted`.
pub struct KeyAndRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Generate a new ECDSA P-256 key and its request.
///
/// # Errors
/// Key generation or request serialization failed.
pub fn request(wanted: &Wanted) -> Result<KeyAndRequest, PemError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PemError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, NODES_GROUP);
    dn.push(DnType::CommonName, wanted.common_name());
    params.distinguished_name = dn;
    for ip in &wanted.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for name in &wanted.dns {
        let name = name.clone().try_into().map_err(PemError::Generate)?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let csr = params.serialize_request(&key).map_err(PemError::Generate)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(PemError::Generate)?,
    })
}

/// What an issued certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Issued {
    /// Parse the first certificate of a PEM chain.
    ///
    /// # Errors
    /// No certificate, or an unparseable one.
    pub fn parse(cert_pem: &[u8]) -> Result<Self, PemError> {
        let der = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or(PemError::NoCertificate)?
            .map_err(|e| PemError::Parse(e.to_string()))?;
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| PemError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let text = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            it.filter_map(|a| a.as_str().ok().map(String::from))
                .collect::<Vec<_>>()
        };
        let common_name = text(&mut subject.iter_common_name())
            .into_iter()
            .next()
            .unwrap_or_default();
        let organizations = text(&mut subject.iter_organization());
        let (mut ips, mut dns) = (vec![], vec![]);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let ts = |t: x509_parser::time::ASN1Time| {
            Timestamp::from_second(t.timestamp()).map_err(|e| PemError::Parse(e.to_string()))
        };
        Ok(Self {
            common_name,
            organizations,
            ips,
            dns,
            not_before: ts(cert.validity().not_before)?,
            not_after: ts(cert.validity().not_after)?,
        })
    }

    /// Whether this certificate still serves `wanted` at `now`: same subject, same SANs (as sets),
    /// not yet expired.
    pub fn fits(&self, wanted: &Wanted, now: Timestamp) -> bool {
        fn set<T: Ord>(v: &[T]) -> BTreeSet<&T> {
            v.iter().collect()
        }
        self.common_name == wanted.common_name()
            && self.organizations == [NODES_GROUP]
            && set(&self.ips) == set(&wanted.ips)
            && set(&self.dns) == set(&wanted.dns)
            && now < self.not_after
    }

    /// The lifetime from notBefore to notAfter.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .try_into()
            .unwrap_or_default()
    }

    /// When to rotate: a random point in 70-90% of the lifetime (as client-go's certificate manager), so
    /// a fleet issued at once does not renew at once.
    pub fn rotation_deadline(&self, rng: &mut impl Rng) -> Timestamp {
        let fraction = rng.random_range(0.7..0.9);
        let offset = self.lifetime().mul_f64(fraction);
        self.not_before
            .checked_add(jiff::SignedDuration::try_from(offset).unwrap_or_default())
            .unwrap_or(self.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid from 2026-01-01 to 2026-`until`.
    fn self_signed(wanted: &Wanted, until: (u8, u8)) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, wanted.common_name());
        params
            .distinguished_name
            .push(DnType::OrganizationName, NODES_GROUP);
        for ip in &wanted.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for d in &wanted.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.clone().try_into().unwrap()));
        }
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, until.0, until.1);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn request_carries_subject_and_sans() {
        let wanted = Wanted::serving(
            "edge-0",
            vec!["10.0.0.7".parse().unwrap()],
            vec!["edge-0".into()],
        );
        let req = request(&wanted).unwrap();
        assert!(req.key_pem.contains("PRIVATE KEY"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).unwrap();
        let sans = parsed.params.subject_alt_names;
        assert!(sans.contains(&SanType::IpAddress("10.0.0.7".parse().unwrap())));
        assert!(
            sans.iter()
                .any(|s| matches!(s, SanType::DnsName(d) if d.as_str() == "edge-0"))
        );
        let text = format!("{:?}", parsed.params.distinguished_name);
        assert!(
            text.contains("system:node:edge-0") && text.contains("system:nodes"),
            "{text}"
        );
    }

    #[test]
    fn issued_fits_only_the_same_subject_and_sans_before_expiry() {
        let wanted = Wanted::serving(
            "edge-0",
            vec!["10.0.0.7".parse().unwrap()],
            vec!["edge-0".into()],
        );
        let issued = Issued::parse(self_signed(&wanted, (1, 11)).as_bytes()).unwrap();
        let during = Timestamp::from_second(1_767_225_600 + 86_400).unwrap(); // 2026-01-02
        assert!(issued.fits(&wanted, during));
        let moved = Wanted::serving(
            "edge-0",
            vec!["10.0.0.8".parse().unwrap()],
            vec!["edge-0".into()],
        );
        assert!(!issued.fits(&moved, during), "address changed");
        assert!(
            !issued.fits(&Wanted::client("edge-0"), during),
            "client has no SANs"
        );
        let later = Timestamp::from_second(1_767_225_600 + 11 * 86_400).unwrap();
        assert!(!issued.fits(&wanted, later), "expired");
        let other = Wanted::serving("edge-1", wanted.ips.clone(), vec!["edge-0".into()]);
        assert!(!issued.fits(&other, during), "other node");
    }

    #[test]
    fn rotation_falls_in_70_to_90_percent_of_the_lifetime() {
        let issued = Issued::parse(self_signed(&Wanted::client("n"), (4, 11)).as_bytes()).unwrap();
        let mut rng = rand::rng();
        for _ in 0..200 {
            let at = issued.rotation_deadline(&mut rng);
            let frac = at.duration_since(issued.not_before).as_secs_f64()
                / issued.lifetime().as_secs_f64();
            assert!((0.7..0.9).contains(&frac), "{frac}");
        }
    }
}
