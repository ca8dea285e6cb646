//! Base64 encoding, for the two forms the daemon writes: standard with
//! padding (HTTP `Proxy-Authorization: Basic`) and URL-safe without it
//! (JWT segments, Go's `RawURLEncoding`). Decoders stay with their
//! callers, whose rules differ: JWTs are strict with Go's error texts,
//! kubeconfig data is lenient about whitespace.

/// Which alphabet, and with it whether the output is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `+/`, padded with `=`.
    Standard,
    /// `-_`, unpadded.
    UrlRaw,
}

pub const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn encode(bytes: &[u8], form: Form) -> String {
    let alphabet = match form {
        Form::Standard => STANDARD,
        Form::UrlRaw => URL,
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if form == Form::Standard {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_in_both_forms() {
        let cases = [
            ("", "", ""),
            ("f", "Zg==", "Zg"),
            ("fo", "Zm8=", "Zm8"),
            ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"),
            ("fooba", "Zm9vYmE=", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ];
        for (plain, padded, raw) in cases {
            assert_eq!(encode(plain.as_bytes(), Form::Standard), padded);
            assert_eq!(encode(plain.as_bytes(), Form::UrlRaw), raw);
        }
        assert_eq!(encode(&[0xfb, 0xff], Form::Standard), "+/8=");
        assert_eq!(encode(&[0xfb, 0xff], Form::UrlRaw), "-_8");
    }
}
