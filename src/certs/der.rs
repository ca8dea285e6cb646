//! The little DER this crate writes and reads by hand: the subjectAltName
//! value, whose node-ID entries no certificate library encodes the way
//! Receptor needs.

use std::fmt;

/// A DER item that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerError {
    /// The input ends inside a tag, length or value.
    Truncated,
    /// Indefinite, over-long or non-minimal length, or a multi-byte tag.
    BadHeader,
}

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DerError::Truncated => "truncated DER",
            DerError::BadHeader => "malformed DER header",
        })
    }
}

impl std::error::Error for DerError {}

/// One tag-length-value item with a one-byte tag.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads consecutive items from a byte string.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next item's tag and content.
    pub fn read(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::BadHeader);
        }
        let (len, after_len) = read_len(after_tag)?;
        if after_len.len() < len {
            return Err(DerError::Truncated);
        }
        let (content, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok((tag, content))
    }

    /// The next item, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        match self.read()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(DerError::BadHeader),
        }
    }
}

fn read_len(input: &[u8]) -> Result<(usize, &[u8]), DerError> {
    let (&first, rest) = input.split_first().ok_or(DerError::Truncated)?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7f);
    // 0x80 is BER's indefinite length; more than 4 bytes is absurd here.
    if n == 0 || n > 4 {
        return Err(DerError::BadHeader);
    }
    if rest.len() < n {
        return Err(DerError::Truncated);
    }
    let (bytes, rest) = rest.split_at(n);
    let len = bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if bytes[0] == 0 || len < 0x80 {
        return Err(DerError::BadHeader);
    }
    Ok((len, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let item = tlv(0x04, &content);
            let mut r = Reader::new(&item);
            assert_eq!(r.read(), Ok((0x04, &content[..])), "{len}");
            assert!(r.is_empty());
        }
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    }

    #[test]
    fn every_prefix_is_truncated() {
        let item = tlv(0x30, &tlv(0x0c, &[b'x'; 130]));
        for cut in 0..item.len() {
            assert_eq!(
                Reader::new(&item[..cut]).read(),
                Err(DerError::Truncated),
                "{cut}"
            );
        }
    }

    #[test]
    fn bad_headers() {
        for bad in [
            &[0x1f, 0x01, 0x00][..],
            &[0x04, 0x80],
            &[0x04, 0x81, 0x05, 0, 0, 0, 0, 0],
            &[0x04, 0x82, 0x00, 0x80],
        ] {
            assert_eq!(Reader::new(bad).read(), Err(DerError::BadHeader), "{bad:?}");
        }
    }
}
