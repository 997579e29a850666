//! Bodies of the fuzz targets, shared by the libFuzzer binaries (nightly, `cargo fuzz`) and the
//! bounded stable run in `tests/bounded.rs` (CI). Each must never panic, whatever the input, and
//! checks round-trip properties where the input parses.

use bytes::{Bytes, BytesMut};
use vk_runtime::stream::remotecommand::ResizeDecoder;
use vk_runtime::stream::spdy::frame::{self, Frame};
use vk_runtime::stream::spdy::headers::{HeaderDecoder, HeaderLimits, parse_block};
use vk_runtime::stream::websocket::{self, ChannelFrame, WireMessage, WsProtocol};

const LIMITS: HeaderLimits = HeaderLimits {
    max_block_len: 16 * 1024,
    max_pairs: 32,
};

/// Parse a byte stream as consecutive frames, inflating header blocks with one connection-wide
/// decoder, and check that every parsed frame re-encodes to bytes that parse to the same frame.
pub fn spdy_frames(data: &[u8]) {
    let mut decoder = HeaderDecoder::new(LIMITS);
    let mut rest = data;
    while let Ok(Some((parsed, used))) = frame::parse(rest, 64 * 1024) {
        assert!(used >= frame::HEADER_LEN && used <= rest.len());
        rest = &rest[used..];
        match &parsed {
            Frame::SynStream { header_block, .. }
            | Frame::SynReply { header_block, .. }
            | Frame::Headers { header_block, .. } => {
                let _ = decoder.decode(header_block);
            }
            _ => {}
        }
        if matches!(parsed, Frame::UnknownControl { .. }) {
            continue;
        }
        let mut again = BytesMut::new();
        frame::encode(&parsed, &mut again);
        let (reparsed, reused) = frame::parse(&again, usize::MAX)
            .ok()
            .flatten()
            .expect("re-encoded frame parses");
        assert_eq!(reused, again.len());
        assert_eq!(reparsed, parsed);
    }
}

/// Decode bytes as a compressed header block (fresh and continued contexts) and as a raw block.
pub fn spdy_header_block(data: &[u8]) {
    let mut decoder = HeaderDecoder::new(LIMITS);
    let _ = decoder.decode(data);
    let _ = decoder.decode(data);
    if let Ok(headers) = parse_block(data, 32) {
        assert!(headers.len() <= 32 * data.len().max(1));
    }
}

/// Decode bytes as binary and text channel messages under every protocol, check the encoder's
/// output decodes back, and feed the bytes to the resize decoder.
pub fn ws_frames(data: &[u8]) {
    let protocols = [
        WsProtocol::V5,
        WsProtocol::V4,
        WsProtocol::V4Base64,
        WsProtocol::V1,
        WsProtocol::V1Base64,
    ];
    let bytes = Bytes::copy_from_slice(data);
    let text = String::from_utf8_lossy(data);
    for protocol in protocols {
        let _ = websocket::decode_binary(protocol, &bytes);
        let _ = websocket::decode_text(protocol, &text);
        if let Some((&channel, payload)) = data.split_first() {
            if channel == websocket::CLOSE_SIGNAL && protocol.has_close_signal() {
                continue;
            }
            // Base64 channel markers are ASCII digits from '0': channels up to 79 round-trip.
            if protocol.is_base64() && channel > 79 {
                continue;
            }
            let decoded = match websocket::encode(protocol, channel, payload) {
                WireMessage::Binary(b) => websocket::decode_binary(protocol, &b),
                WireMessage::Text(t) => websocket::decode_text(protocol, &t),
            };
            let expected = ChannelFrame::Data {
                channel,
                payload: Bytes::copy_from_slice(payload),
            };
            assert_eq!(decoded, Ok(Some(expected)));
        }
    }
    let mut resize = ResizeDecoder::default();
    for chunk in data.chunks(7) {
        let _ = resize.push(chunk);
    }
}
