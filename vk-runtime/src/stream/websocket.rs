//! The Kubernetes WebSocket channel protocols, as pure framing: subprotocol names and negotiation,
//! and the channel byte (binary) or ASCII-digit + base64 (text) message layout.
//!
//! Channels of exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. Port-forward uses two
//! channels per port (2i data, 2i+1 error), each starting with the port as a little-endian u16.
//! `v5.channel.k8s.io` adds the close message `[255, channel]` (half-close of one channel).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// First byte of a v5 close message; the second names the channel.
pub const CLOSE_SIGNAL: u8 = 255;

/// A channel subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WsProtocol {
    /// `v5.channel.k8s.io`: v4 plus the close message.
    V5,
    /// `v4.channel.k8s.io`: binary, Status JSON on the error channel.
    V4,
    /// `v4.base64.channel.k8s.io`.
    V4Base64,
    /// `channel.k8s.io` (also what a request without any subprotocol gets): binary, text errors.
    V1,
    /// `base64.channel.k8s.io`.
    V1Base64,
}

impl WsProtocol {
    pub const fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V4Base64 => "v4.base64.channel.k8s.io",
            Self::V1 => "channel.k8s.io",
            Self::V1Base64 => "base64.channel.k8s.io",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::V5, Self::V4, Self::V4Base64, Self::V1, Self::V1Base64]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Text messages with an ASCII channel digit and a base64 payload.
    pub const fn is_base64(self) -> bool {
        matches!(self, Self::V4Base64 | Self::V1Base64)
    }

    /// The error channel carries a `metav1.Status` JSON (v4 and later) rather than plain text.
    pub const fn status_errors(self) -> bool {
        matches!(self, Self::V5 | Self::V4 | Self::V4Base64)
    }

    /// Peers may half-close a channel with `[255, channel]`.
    pub const fn has_close_signal(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// Subprotocols of exec/attach, in the server's order of preference.
pub const EXEC_PROTOCOLS: &[WsProtocol] = &[
    WsProtocol::V5,
    WsProtocol::V4,
    WsProtocol::V4Base64,
    WsProtocol::V1,
    WsProtocol::V1Base64,
];
/// Subprotocols of port-forward (a request without a subprotocol is binary too).
pub const PORT_FORWARD_PROTOCOLS: &[WsProtocol] =
    &[WsProtocol::V4, WsProtocol::V4Base64, WsProtocol::V1Base64];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error(
        "requested WebSocket subprotocol(s) {requested:?} are not supported; supported: {supported:?}"
    )]
    Unsupported {
        requested: Vec<String>,
        supported: Vec<&'static str>,
    },
    #[error("channel message has an invalid channel marker {0:#x}")]
    BadChannel(u8),
    #[error("channel message has invalid base64")]
    BadBase64,
    #[error("close message is malformed")]
    BadClose,
}

/// Pick the first protocol the client offers (header values may hold comma-separated lists) that
/// `supported` contains. No offer at all: `Ok(None)`, and the connection speaks binary channels
/// without echoing a subprotocol.
pub fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[WsProtocol],
) -> Result<Option<WsProtocol>, WsError> {
    let requested: Vec<String> = offered
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if requested.is_empty() {
        return Ok(None);
    }
    requested
        .iter()
        .find_map(|r| WsProtocol::from_name(r).filter(|p| supported.contains(p)))
        .map(Some)
        .ok_or_else(|| WsError::Unsupported {
            requested,
            supported: supported.iter().map(|p| p.name()).collect(),
        })
}

/// A message as it travels on the WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireMessage {
    Binary(Bytes),
    Text(String),
}

/// A decoded channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelFrame {
    Data {
        channel: u8,
        payload: Bytes,
    },
    /// v5: the peer will send nothing more on `channel`.
    Close {
        channel: u8,
    },
}

/// Frame `payload` for `channel`.
pub fn encode(protocol: WsProtocol, channel: u8, payload: &[u8]) -> WireMessage {
    if protocol.is_base64() {
        let mut text = String::with_capacity(1 + payload.len().div_ceil(3) * 4);
        text.push(char::from(b'0'.wrapping_add(channel)));
        STANDARD.encode_string(payload, &mut text);
        WireMessage::Text(text)
    } else {
        let mut buf = Vec::with_capacity(1 + payload.len());
        buf.push(channel);
        buf.extend_from_slice(payload);
        WireMessage::Binary(Bytes::from(buf))
    }
}

/// The v5 close message for `channel`; `None` for protocols without one.
pub fn encode_close(protocol: WsProtocol, channel: u8) -> Option<WireMessage> {
    protocol
        .has_close_signal()
        .then(|| WireMessage::Binary(Bytes::from(vec![CLOSE_SIGNAL, channel])))
}

/// Decode a binary message. Empty messages carry nothing (`Ok(None)`).
pub fn decode_binary(protocol: WsProtocol, data: &Bytes) -> Result<Option<ChannelFrame>, WsError> {
    let Some(&channel) = data.first() else {
        return Ok(None);
    };
    if protocol.is_base64() {
        // Base64 protocols send text; accept binary carrying the same layout.
        let text = std::str::from_utf8(data).map_err(|_| WsError::BadBase64)?;
        return decode_text(protocol, text);
    }
    if channel == CLOSE_SIGNAL && protocol.has_close_signal() {
        return match data.len() {
            2 => Ok(Some(ChannelFrame::Close { channel: data[1] })),
            _ => Err(WsError::BadClose),
        };
    }
    Ok(Some(ChannelFrame::Data {
        channel,
        payload: data.slice(1..),
    }))
}

/// Decode a text message (base64 protocols). Empty messages carry nothing (`Ok(None)`).
pub fn decode_text(protocol: WsProtocol, text: &str) -> Result<Option<ChannelFrame>, WsError> {
    let Some(&marker) = text.as_bytes().first() else {
        return Ok(None);
    };
    if !protocol.is_base64() {
        // Binary protocols never send text; treat the bytes as a binary message.
        return decode_binary(protocol, &Bytes::copy_from_slice(text.as_bytes()));
    }
    let channel = marker
        .checked_sub(b'0')
        .ok_or(WsError::BadChannel(marker))?;
    let payload = STANDARD
        .decode(&text.as_bytes()[1..])
        .map_err(|_| WsError::BadBase64)?;
    Ok(Some(ChannelFrame::Data {
        channel,
        payload: Bytes::from(payload),
    }))
}

/// The port-forward prefix: the first message on each of a port's channels.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "websocket_tests.rs"]
mod tests;
