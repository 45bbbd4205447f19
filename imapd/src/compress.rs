//! COMPRESS=DEFLATE (RFC 4978): raw deflate both ways, each server write ending with a sync
//! flush so the client can decode every response as soon as it arrives.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The compressing side (server to client).
pub struct Deflate {
    inner: Compress,
}

impl Default for Deflate {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflate {
    pub fn new() -> Self {
        // Raw deflate: no zlib header (RFC 4978 section 4).
        Deflate {
            inner: Compress::new(Compression::new(6), false),
        }
    }

    /// Compresses `data` and sync-flushes, so the output is complete up to this point.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inner.total_in();
            self.inner
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            let consumed = (self.inner.total_in() - before_in) as usize;
            input = &input[consumed..];
            // Done when all input is taken and the flush left spare room in the buffer.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side (client to server).
pub struct Inflate {
    inner: Decompress,
}

impl Default for Inflate {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflate {
    pub fn new() -> Self {
        Inflate {
            inner: Decompress::new(false),
        }
    }

    /// Decompresses what the client sent so far.
    pub fn decompress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inner.total_in();
            let status = self
                .inner
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (self.inner.total_in() - before_in) as usize;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed == 0 && out.len() < out.capacity() {
                // No progress with room to spare: the input is incomplete.
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut d = Deflate::new();
        let mut i = Inflate::new();
        let a = d.compress(b"* OK hello\r\n").unwrap();
        assert_eq!(i.decompress(&a).unwrap(), b"* OK hello\r\n");
        let big: Vec<u8> = (0..200_000u32).flat_map(|n| n.to_le_bytes()).collect();
        let b = d.compress(&big).unwrap();
        // Fed in small pieces, the output is the same bytes.
        let mut got = Vec::new();
        for chunk in b.chunks(1000) {
            got.extend(i.decompress(chunk).unwrap());
        }
        assert_eq!(got, big);
    }

    #[test]
    fn each_flush_is_decodable_alone() {
        let mut d = Deflate::new();
        let first = d.compress(b"a1 OK done\r\n").unwrap();
        // A fresh raw inflater (as a client would have) decodes the first flush completely.
        let mut i = Decompress::new(false);
        let mut out = Vec::with_capacity(100);
        i.decompress_vec(&first, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, b"a1 OK done\r\n");
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
    }

    #[test]
    fn empty_input() {
        let mut d = Deflate::new();
        let _ = d.compress(b"").unwrap();
        let mut i = Inflate::new();
        assert_eq!(i.decompress(b"").unwrap(), b"");
    }
}
