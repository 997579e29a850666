//! Terminal resize messages: JSON objects `{"Width":w,"Height":h}`. Over SPDY they arrive as a byte
//! stream of concatenated objects (Go's json.Encoder), split anywhere; over WebSocket one per message.

use serde::Deserialize;

use crate::provider::TermSize;

/// Bytes of an incomplete object kept between chunks; a peer sending more is cut off.
const MAX_PENDING: usize = 4096;

#[derive(Deserialize)]
struct WireSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Incremental decoder of a stream of resize objects.
#[derive(Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
    failed: bool,
}

impl ResizeDecoder {
    /// Feed a chunk; returns every complete size it finished. After malformed input or an
    /// oversized object the decoder yields nothing more.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<TermSize> {
        if self.failed {
            return Vec::new();
        }
        self.pending.extend_from_slice(chunk);
        let mut sizes = Vec::new();
        let mut iter = serde_json::Deserializer::from_slice(&self.pending).into_iter::<WireSize>();
        let mut consumed = 0;
        loop {
            match iter.next() {
                Some(Ok(s)) => {
                    consumed = iter.byte_offset();
                    sizes.push(TermSize {
                        width: s.width,
                        height: s.height,
                    });
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    self.failed = true;
                    break;
                }
                None => {
                    consumed = self.pending.len();
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        if self.pending.len() > MAX_PENDING {
            self.failed = true;
            self.pending.clear();
        }
        sizes
    }
}

/// Decode one WebSocket resize message.
pub fn decode_message(payload: &[u8]) -> Option<TermSize> {
    serde_json::from_slice::<WireSize>(payload)
        .ok()
        .map(|s| TermSize {
            width: s.width,
            height: s.height,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stream_split_anywhere() {
        let wire = b"{\"Width\":80,\"Height\":24}\n{\"Width\":120,\"Height\":40}\n";
        for split in 0..wire.len() {
            let mut d = ResizeDecoder::default();
            let mut got = d.push(&wire[..split]);
            got.extend(d.push(&wire[split..]));
            assert_eq!(
                got,
                vec![
                    TermSize {
                        width: 80,
                        height: 24
                    },
                    TermSize {
                        width: 120,
                        height: 40
                    }
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn garbage_stops_decoding() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(b"{\"Width\":\"x\"}").is_empty());
        assert!(d.push(b"{\"Width\":1,\"Height\":2}").is_empty());
        let mut d = ResizeDecoder::default();
        assert!(d.push(&[b' '; 10]).is_empty());
        assert!(d.push(b"[").is_empty());
        assert!(d.push(&[b'['; MAX_PENDING + 1]).is_empty());
    }

    #[test]
    fn websocket_message() {
        assert_eq!(
            decode_message(br#"{"Width":3,"Height":4}"#),
            Some(TermSize {
                width: 3,
                height: 4
            })
        );
        assert_eq!(decode_message(b"nope"), None);
    }
}
