//! SPDY/3.1 framing: the 8-byte frame header, every control frame type and DATA frames.
//!
//! Parsing is pure and bounded: a frame longer than the configured maximum is rejected from its
//! header alone, before its body is buffered. Header blocks stay compressed here; `headers.rs`
//! owns their (stateful) compression. [`FrameCodec`] adapts the parser to `tokio_util::codec`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The only protocol version spoken.
pub const VERSION: u16 = 3;
/// Size of every frame header.
pub const HEADER_LEN: usize = 8;
/// The largest length the 24-bit length field can carry.
pub const MAX_LEN_FIELD: usize = 0x00FF_FFFF;
/// FIN: the sender's half of the stream is closed (SYN_STREAM, SYN_REPLY, HEADERS, DATA).
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL: the receiver may not send on the stream (SYN_STREAM).
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const ID_MASK: u32 = 0x7FFF_FFFF;

/// One SETTINGS entry (parsed, then ignored by the session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Header blocks are still compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type this version does not define; the spec says to ignore it.
    UnknownControl {
        frame_type: u16,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// Why bytes are not a valid frame. Every variant ends the session (GOAWAY PROTOCOL_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("i/o error on the SPDY connection")]
    Io(#[from] std::io::Error),
}

fn malformed(frame: &'static str, reason: &'static str) -> FrameError {
    FrameError::Malformed { frame, reason }
}

/// Parse one frame from the front of `buf`. `Ok(None)`: more bytes are needed; otherwise the frame
/// and how many bytes it used. Frames whose body exceeds `max_len` fail from the header alone.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let word0 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let body = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
    let frame = if word0 & 0x8000_0000 == 0 {
        Frame::Data {
            stream_id: word0 & ID_MASK,
            flags,
            data: body,
        }
    } else {
        // The version is 15 bits after the control bit; the mask makes the cast lossless.
        let version = ((word0 >> 16) & 0x7FFF) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        parse_control((word0 & 0xFFFF) as u16, flags, body)?
    };
    Ok(Some((frame, HEADER_LEN + len)))
}

fn parse_control(frame_type: u16, flags: u8, mut body: Bytes) -> Result<Frame, FrameError> {
    let len = body.len();
    Ok(match frame_type {
        TYPE_SYN_STREAM => {
            if len < 10 {
                return Err(malformed("SYN_STREAM", "shorter than 10 bytes"));
            }
            let stream_id = body.get_u32() & ID_MASK;
            let associated_to = body.get_u32() & ID_MASK;
            let priority = body.get_u8() >> 5;
            let slot = body.get_u8();
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                header_block: body,
            }
        }
        TYPE_SYN_REPLY => {
            if len < 4 {
                return Err(malformed("SYN_REPLY", "shorter than 4 bytes"));
            }
            let stream_id = body.get_u32() & ID_MASK;
            Frame::SynReply {
                stream_id,
                flags,
                header_block: body,
            }
        }
        TYPE_RST_STREAM => {
            if len != 8 {
                return Err(malformed("RST_STREAM", "length is not 8"));
            }
            Frame::RstStream {
                stream_id: body.get_u32() & ID_MASK,
                status: body.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            if len < 4 {
                return Err(malformed("SETTINGS", "shorter than 4 bytes"));
            }
            let count = body.get_u32() as usize;
            if count.checked_mul(8) != Some(body.len()) {
                return Err(malformed(
                    "SETTINGS",
                    "entry count does not match the length",
                ));
            }
            let entries = (0..count)
                .map(|_| {
                    let word = body.get_u32();
                    Setting {
                        flags: (word >> 24) as u8,
                        id: word & 0x00FF_FFFF,
                        value: body.get_u32(),
                    }
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            if len != 4 {
                return Err(malformed("PING", "length is not 4"));
            }
            Frame::Ping { id: body.get_u32() }
        }
        TYPE_GOAWAY => {
            // SPDY/3 carries a status; tolerate the 4-byte SPDY/2 form some peers still send.
            if len != 8 && len != 4 {
                return Err(malformed("GOAWAY", "length is not 8"));
            }
            let last_good_stream_id = body.get_u32() & ID_MASK;
            let status = if body.remaining() >= 4 {
                body.get_u32()
            } else {
                goaway::OK
            };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_HEADERS => {
            if len < 4 {
                return Err(malformed("HEADERS", "shorter than 4 bytes"));
            }
            let stream_id = body.get_u32() & ID_MASK;
            Frame::Headers {
                stream_id,
                flags,
                header_block: body,
            }
        }
        TYPE_WINDOW_UPDATE => {
            if len != 8 {
                return Err(malformed("WINDOW_UPDATE", "length is not 8"));
            }
            Frame::WindowUpdate {
                stream_id: body.get_u32() & ID_MASK,
                delta: body.get_u32() & ID_MASK,
            }
        }
        other => Frame::UnknownControl { frame_type: other },
    })
}

fn put_control_header(dst: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    put_flags_len(dst, flags, len);
}

fn put_flags_len(dst: &mut BytesMut, flags: u8, len: usize) {
    // Callers split payloads to at most MAX_LEN_FIELD bytes; the mask keeps the 24-bit field honest.
    let len = (len & MAX_LEN_FIELD) as u32;
    dst.put_u32(u32::from(flags) << 24 | len);
}

/// Append the wire form of `frame` to `dst`. Bodies longer than [`MAX_LEN_FIELD`] are a caller bug;
/// the session never builds them (DATA is split into chunks, header blocks are bounded).
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            flags,
            header_block,
        } => {
            put_control_header(dst, TYPE_SYN_STREAM, *flags, 10 + header_block.len());
            dst.put_u32(stream_id & ID_MASK);
            dst.put_u32(associated_to & ID_MASK);
            dst.put_u8((priority & 0x7) << 5);
            dst.put_u8(*slot);
            dst.extend_from_slice(header_block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            header_block,
        } => {
            put_control_header(dst, TYPE_SYN_REPLY, *flags, 4 + header_block.len());
            dst.put_u32(stream_id & ID_MASK);
            dst.extend_from_slice(header_block);
        }
        Frame::RstStream { stream_id, status } => {
            put_control_header(dst, TYPE_RST_STREAM, 0, 8);
            dst.put_u32(stream_id & ID_MASK);
            dst.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            put_control_header(dst, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            dst.put_u32(entries.len() as u32);
            for e in entries {
                dst.put_u32(u32::from(e.flags) << 24 | (e.id & 0x00FF_FFFF));
                dst.put_u32(e.value);
            }
        }
        Frame::Ping { id } => {
            put_control_header(dst, TYPE_PING, 0, 4);
            dst.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            put_control_header(dst, TYPE_GOAWAY, 0, 8);
            dst.put_u32(last_good_stream_id & ID_MASK);
            dst.put_u32(*status);
        }
        Frame::Headers {
            stream_id,
            flags,
            header_block,
        } => {
            put_control_header(dst, TYPE_HEADERS, *flags, 4 + header_block.len());
            dst.put_u32(stream_id & ID_MASK);
            dst.extend_from_slice(header_block);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            put_control_header(dst, TYPE_WINDOW_UPDATE, 0, 8);
            dst.put_u32(stream_id & ID_MASK);
            dst.put_u32(delta & ID_MASK);
        }
        Frame::UnknownControl { frame_type } => put_control_header(dst, *frame_type, 0, 0),
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            dst.put_u32(stream_id & ID_MASK);
            put_flags_len(dst, *flags, data.len());
            dst.extend_from_slice(data);
        }
    }
}

/// `tokio_util` codec over [`parse`] and [`encode`], bounded by `max_len` for incoming frames.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    pub max_len: usize,
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match parse(src, self.max_len)? {
            Some((frame, used)) => {
                src.advance(used);
                Ok(Some(frame))
            }
            None => {
                if src.len() >= HEADER_LEN {
                    let len =
                        usize::from(src[5]) << 16 | usize::from(src[6]) << 8 | usize::from(src[7]);
                    src.reserve(HEADER_LEN + len - src.len());
                }
                Ok(None)
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode(&frame, dst);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "frame_tests.rs"]
mod tests;
