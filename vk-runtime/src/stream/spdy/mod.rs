//! SPDY/3.1 as a kubelet endpoint needs it: the server side of the streams `kubectl exec/attach/
//! port-forward` (and the apiserver's translators) open after an `Upgrade: SPDY/3.1`.
//!
//! - [`frame`]: the frame codec (all control types and DATA), bounded lengths;
//! - [`headers`]: header blocks and their per-connection zlib contexts (SPDY/3 dictionary);
//! - [`session`]: a connection: accepts streams, answers PING, routes DATA, idle timeout;
//! - [`stream`]: one accepted stream (headers, reader, writer) for the protocol layer.
//!
//! No maintained Rust crate serves SPDY, so the project owns this; it parses untrusted bytes and
//! has fuzz targets in `vk-runtime/fuzz`.

pub mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;
pub mod stream;

pub use frame::{Frame, FrameCodec, FrameError};
pub use headers::{HeaderDecoder, HeaderEncoder, HeaderError, HeaderLimits, Headers};
pub use session::{Session, SessionConfig};
pub use stream::{SpdyStream, StreamReader, StreamWriter};

/// The `Upgrade` token of SPDY/3.1.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
