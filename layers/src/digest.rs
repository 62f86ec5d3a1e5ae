//! sha256 digests in the OCI `sha256:<hex>` form, and a writer that hashes what passes through it.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// A sha256 content digest, shown as `sha256:<64 hex digits>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

/// A string that is not a digest envlayer can verify: `sha256:` and 64 lowercase hex digits. Other
/// algorithms (`sha512:...`) are refused, not skipped, so a pinned digest can never be bypassed.
#[derive(Debug, thiserror::Error)]
pub enum DigestParseError {
    /// Not `algorithm:hex` at all.
    #[error("not a digest (expected sha256:<64 hex digits>): {0:?}")]
    Malformed(String),
    /// A well-formed digest of an algorithm envlayer does not verify.
    #[error("digest algorithm {0:?} is not supported (envlayer verifies sha256 only)")]
    Unsupported(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
    /// Wraps raw sha256 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        // sha2 0.11's output no longer implements LowerHex, so encode by hand.
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        s
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(100).flat_map(char::escape_debug).collect();
        let Some((algorithm, hex)) = s.split_once(':') else { return Err(DigestParseError::Malformed(shown)) };
        // The OCI grammar for an algorithm: lowercase letters and digits joined by `+._-`.
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.len() <= 32
            && algorithm.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algorithm_ok {
            return Err(DigestParseError::Malformed(shown));
        }
        if algorithm != "sha256" {
            return Err(DigestParseError::Unsupported(algorithm.to_string()));
        }
        Self::from_hex(hex).ok_or(DigestParseError::Malformed(shown))
    }
}

impl Digest {
    /// Parses 64 lowercase hex digits (a sha256 without its `sha256:` prefix), as in a blob's file name.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16);
            let lo = (chunk[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) if !chunk.iter().any(u8::is_ascii_uppercase) => {
                    out[i] = (h * 16 + l) as u8
                }
                _ => return None,
            }
        }
        Some(Self(out))
    }
}
impl TryFrom<String> for Digest {
    type Error = DigestParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Passes writes through to `inner` while hashing them and counting bytes.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), len: 0 }
    }
    /// The inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest(self.hasher.finalize().into()), self.len)
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_and_round_trip() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:XYZ".parse::<Digest>().is_err());
        assert!("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855".parse::<Digest>().is_err());
        // The algorithm is required, and only sha256 is accepted.
        assert!(d.hex().parse::<Digest>().is_err());
        let e = format!("sha512:{}", "a".repeat(128)).parse::<Digest>().unwrap_err();
        assert!(matches!(e, DigestParseError::Unsupported(_)), "{e}");
        assert!(format!("sha256:{}/..", &d.hex()[..61]).parse::<Digest>().is_err());
        assert_eq!(Digest::from_hex(&d.hex()), Some(d));
    }

    #[test]
    fn hashing_writer_matches_one_shot() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(b"hello world"));
    }
}
