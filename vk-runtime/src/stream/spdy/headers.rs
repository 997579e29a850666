//! SPDY/3 header blocks: the name/value layout and its zlib compression.
//!
//! One [`HeaderDecoder`] (inflater) and one [`HeaderEncoder`] (deflater) live as long as the
//! connection, both seeded with the SPDY/3 dictionary; every outgoing block ends with a sync flush.
//! A fresh context per frame would break the peer, so the session owns exactly one of each.
//! Decoding is bounded: decompressed size, pair count and each length are limited.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::SPDY3_DICTIONARY;

/// The zlib dictionary id (Adler-32) of [`SPDY3_DICTIONARY`], as a peer's zlib header announces it.
const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// Header pairs in arrival order. Names are lower-case; lookups are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a value; the name is stored lower-case as SPDY requires.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Limits applied while decoding a header block a peer sent.
#[derive(Clone, Copy, Debug)]
pub struct HeaderLimits {
    /// Decompressed size of one block.
    pub max_block_len: usize,
    /// Name/value pairs in one block.
    pub max_pairs: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self {
            max_block_len: 64 * 1024,
            max_pairs: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block decompression failed")]
    Inflate(#[source] flate2::DecompressError),
    #[error("header block compression failed")]
    Deflate(#[source] flate2::CompressError),
    #[error("decompressed header block exceeds {0} bytes")]
    TooLarge(usize),
    #[error("header block has {0} pairs, more than allowed")]
    TooManyPairs(u32),
    #[error("header block is truncated")]
    Truncated,
    #[error("header block has trailing bytes")]
    Trailing,
    #[error("header name is empty or not lower-case ASCII")]
    BadName,
    #[error("header name or value is not UTF-8")]
    NotUtf8,
    #[error("peer used an unexpected zlib dictionary (id {0:#x})")]
    WrongDictionary(u32),
}

/// Inflates and parses incoming header blocks; one per connection.
pub struct HeaderDecoder {
    inflater: Decompress,
    limits: HeaderLimits,
}

impl HeaderDecoder {
    pub fn new(limits: HeaderLimits) -> Self {
        Self {
            inflater: Decompress::new(true),
            limits,
        }
    }

    /// Decompress one block (continuing the connection's zlib stream) and parse it.
    pub fn decode(&mut self, compressed: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(compressed)?;
        parse_block(&raw, self.limits.max_pairs)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let max = self.limits.max_block_len;
        let mut out = Vec::new();
        loop {
            if out.len() == out.capacity() {
                // Grow in bounded steps; one step past `max` is how an oversized block is noticed.
                out.reserve((max + 1).saturating_sub(out.len()).clamp(1, 4096));
            }
            let (before_in, before_out) = (self.inflater.total_in(), out.len());
            let result = self
                .inflater
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.inflater.total_in() - before_in).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.inflater
                            .set_dictionary(SPDY3_DICTIONARY)
                            .map_err(HeaderError::Inflate)?;
                        continue;
                    }
                    Some(id) => return Err(HeaderError::WrongDictionary(id)),
                    None => return Err(HeaderError::Inflate(e)),
                },
            }
            if out.len() > max {
                return Err(HeaderError::TooLarge(max));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() == before_out {
                // Input left that zlib will not take: the block does not end where the frame does.
                return Err(HeaderError::Truncated);
            }
        }
        Ok(out)
    }
}

fn read_u32(buf: &mut &[u8]) -> Result<u32, HeaderError> {
    let (head, rest) = buf.split_first_chunk::<4>().ok_or(HeaderError::Truncated)?;
    *buf = rest;
    Ok(u32::from_be_bytes(*head))
}

fn read_str<'a>(buf: &mut &'a [u8]) -> Result<&'a str, HeaderError> {
    let len = read_u32(buf)? as usize;
    if len > buf.len() {
        return Err(HeaderError::Truncated);
    }
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    std::str::from_utf8(s).map_err(|_| HeaderError::NotUtf8)
}

/// Parse a decompressed block. Values holding several NUL-separated values become several pairs.
pub fn parse_block(mut buf: &[u8], max_pairs: usize) -> Result<Headers, HeaderError> {
    let count = read_u32(&mut buf)?;
    if count as usize > max_pairs {
        return Err(HeaderError::TooManyPairs(count));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = read_str(&mut buf)?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_uppercase() || !b.is_ascii_graphic())
        {
            return Err(HeaderError::BadName);
        }
        let value = read_str(&mut buf)?;
        for part in value.split('\0') {
            headers.0.push((name.to_string(), part.to_string()));
        }
    }
    if !buf.is_empty() {
        return Err(HeaderError::Trailing);
    }
    Ok(headers)
}

/// Serialize headers (uncompressed), joining repeated names with NUL as SPDY requires.
pub fn serialize_block(headers: &Headers) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in headers.iter() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut out = BytesMut::new();
    out.put_u32(names.len() as u32);
    for name in names {
        let value = headers.get_all(name).collect::<Vec<_>>().join("\0");
        out.put_u32(name.len() as u32);
        out.extend_from_slice(name.as_bytes());
        out.put_u32(value.len() as u32);
        out.extend_from_slice(value.as_bytes());
    }
    out.to_vec()
}

/// Serializes and deflates outgoing header blocks; one per connection.
pub struct HeaderEncoder {
    deflater: Compress,
    dictionary_set: bool,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> Self {
        Self {
            deflater: Compress::new(Compression::default(), true),
            dictionary_set: false,
        }
    }

    /// Compress `headers` as the next block of this connection's zlib stream (sync flush).
    pub fn encode(&mut self, headers: &Headers) -> Result<Bytes, HeaderError> {
        if !self.dictionary_set {
            self.deflater
                .set_dictionary(SPDY3_DICTIONARY)
                .map_err(HeaderError::Deflate)?;
            self.dictionary_set = true;
        }
        let raw = serialize_block(headers);
        let mut input: &[u8] = &raw;
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflater.total_in();
            self.deflater
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(HeaderError::Deflate)?;
            let used = usize::try_from(self.deflater.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            // Done once all input is consumed and the flush left spare room (nothing pending).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "headers_tests.rs"]
mod tests;
