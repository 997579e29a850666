//! SPDY subprotocol negotiation of exec/attach through `X-Stream-Protocol-Version`: pick the first
//! version the client offers that the server supports; missing header: 400; no overlap: 403 with
//! `X-Accepted-Stream-Protocol-Versions`.

/// Versions of the remote-command protocol over SPDY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpdyProtocol {
    /// `channel.k8s.io`
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: Status JSON on the error stream.
    V4,
    /// `v5.channel.k8s.io`: over SPDY the same as v4 (its close signal exists only on WebSocket).
    V5,
}

impl SpdyProtocol {
    /// Supported versions, newest first.
    pub const ALL: [SpdyProtocol; 5] = [Self::V5, Self::V4, Self::V3, Self::V2, Self::V1];

    pub const fn name(self) -> &'static str {
        match self {
            Self::V1 => "channel.k8s.io",
            Self::V2 => "v2.channel.k8s.io",
            Self::V3 => "v3.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The error stream carries a `metav1.Status` JSON.
    pub fn status_errors(self) -> bool {
        self >= Self::V4
    }

    /// A TTY session has a resize stream.
    pub fn has_resize(self) -> bool {
        self >= Self::V3
    }
}

/// Why no version could be agreed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NegotiationError {
    /// No `X-Stream-Protocol-Version` header: 400.
    #[error("missing X-Stream-Protocol-Version header")]
    Missing,
    /// No offered version is supported: 403 with the accepted list.
    #[error("none of the offered stream protocol versions {offered:?} is supported")]
    Unsupported {
        offered: Vec<String>,
        accepted: Vec<&'static str>,
    },
}

/// Negotiate from the header values (each may hold a comma-separated list) against `supported`,
/// honouring the client's order as the kubelet's handshake does.
pub fn negotiate<'a, P: Copy>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[P],
    name: impl Fn(P) -> &'static str,
) -> Result<P, NegotiationError> {
    let offered: Vec<String> = offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if offered.is_empty() {
        return Err(NegotiationError::Missing);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|p| name(*p) == o))
        .ok_or_else(|| NegotiationError::Unsupported {
            offered,
            accepted: supported.iter().map(|p| name(*p)).collect(),
        })
}

/// Negotiate the exec/attach version.
pub fn negotiate_spdy<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Result<SpdyProtocol, NegotiationError> {
    negotiate(offered, &SpdyProtocol::ALL, SpdyProtocol::name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_order_wins() {
        assert_eq!(
            negotiate_spdy(["v4.channel.k8s.io", "v3.channel.k8s.io"]),
            Ok(SpdyProtocol::V4)
        );
        // kubectl >= 1.30 offers v5 first.
        assert_eq!(
            negotiate_spdy([
                "v5.channel.k8s.io",
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io"
            ]),
            Ok(SpdyProtocol::V5)
        );
        assert_eq!(
            negotiate_spdy(["v9.channel.k8s.io, v2.channel.k8s.io"]),
            Ok(SpdyProtocol::V2)
        );
        assert_eq!(negotiate_spdy(["channel.k8s.io"]), Ok(SpdyProtocol::V1));
    }

    #[test]
    fn missing_and_unsupported() {
        assert_eq!(negotiate_spdy([]), Err(NegotiationError::Missing));
        assert_eq!(negotiate_spdy([" "]), Err(NegotiationError::Missing));
        match negotiate_spdy(["v9.channel.k8s.io"]) {
            Err(NegotiationError::Unsupported { offered, accepted }) => {
                assert_eq!(offered, vec!["v9.channel.k8s.io"]);
                assert_eq!(accepted[0], "v5.channel.k8s.io");
                assert_eq!(accepted.len(), 5);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn version_features() {
        assert!(SpdyProtocol::V5.status_errors() && SpdyProtocol::V4.status_errors());
        assert!(!SpdyProtocol::V3.status_errors() && SpdyProtocol::V3.has_resize());
        assert!(!SpdyProtocol::V2.has_resize());
    }
}
