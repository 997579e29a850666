//! The client CA of the test cluster and the certificates it issues: the apiserver's own
//! kubelet-client certificate (`kube-apiserver-kubelet-client`, O `system:masters`) and whatever
//! identities tests ask for. A kubelet trusts callers whose certificate chains to this CA, which a
//! real cluster publishes in ConfigMap `kube-system/extension-apiserver-authentication`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The user the apiserver presents to kubelets.
pub const APISERVER_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The group of [`APISERVER_CLIENT_USER`]: allowed everything by the default authorizer.
pub const APISERVER_CLIENT_GROUP: &str = "system:masters";

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
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that signs client certificates (CN = user, O = groups, usage client auth).
pub struct ClientCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClientCa {
    /// A fresh CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<ClientCa, rcgen::Error> {
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
        Ok(ClientCa {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_user_and_groups() {
        let ca = ClientCa::generate("test-client-ca").unwrap();
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
