//! The test cluster's certificate authorities and what they issue. Two CAs exist, as in clusters
//! that separate them: the cluster CA (signs approved CSRs and the apiserver's serving certificate;
//! kubeconfigs trust it) and the client CA (signs the apiserver's kubelet-client certificate and
//! client identities tests ask for). The apiserver authenticates client certificates from both;
//! kubelets trust the bundle published in `kube-system/extension-apiserver-authentication`.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The OID of the Organization attribute (`O`), which carries a user's groups.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating or signing a certificate failed")]
    Rcgen(#[from] rcgen::Error),
    /// rcgen keeps one value per attribute type; the second group is written under the raw `O`
    /// OID, so two groups fit and no more.
    #[error("at most two groups fit in a test client certificate, got {0}")]
    TooManyGroups(usize),
    #[error("unable to parse csr")]
    Csr(#[source] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA: signs client certificates (CN = user, O = groups, usage client auth), serving
/// certificates and certificate signing requests.
pub struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A client certificate for `user` in `groups`, with a new P-256 key.
    pub fn issue(&self, user: &str, groups: &[&str]) -> Result<Identity, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        let types = [
            DnType::OrganizationName,
            DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
        ];
        if groups.len() > types.len() {
            return Err(CertError::TooManyGroups(groups.len()));
        }
        for (ty, g) in types.into_iter().zip(groups) {
            params.distinguished_name.push(ty, *g);
        }
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for `dns` names and `ips`, with a new P-256 key.
    pub fn issue_serving(
        &self,
        common_name: &str,
        dns: &[&str],
        ips: &[IpAddr],
    ) -> Result<Identity, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PEM certificate signing request, keeping its subject and SANs, valid from now for
    /// `lifetime`; the CA decides the key usages (digital signature, key encipherment) and the one
    /// extended usage `eku`.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        eku: ExtendedKeyUsagePurpose,
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CertError::Csr)?;
        csr.params.is_ca = IsCa::NoCa;
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now;
        csr.params.not_after = now + lifetime;
        csr.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        csr.params.extended_key_usages = vec![eku];
        Ok(csr.signed_by(&self.issuer)?.pem())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_user_and_groups() {
        let ca = Ca::generate("test-client-ca").unwrap();
        let id = ca.issue("alice", &["devs", "ops"]).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(id.cert_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["devs", "ops"]);
        assert!(id.key_pem.contains("PRIVATE KEY"));
        assert!(ca.pem().contains("BEGIN CERTIFICATE"));
        assert!(matches!(
            ca.issue("bob", &["a", "b", "c"]),
            Err(CertError::TooManyGroups(3))
        ));
    }
}
