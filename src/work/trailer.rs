//! Results streams that end with the unit's status, between two of our
//! nodes (docs/work.md §6, "Results with the status at the end"). A
//! controller that reads the final status at the end of the output need
//! not ask for it once the output is in: a request, its reply and their
//! acknowledgements fewer per unit.
//!
//! The controller asks with [`ASK`] in its `work results` request; an
//! executor that understands says so in its reply line
//! ([`HEADER_SUFFIX`]), so an executor that does not (a Go node, an older
//! one of ours) streams plain output and is read as before. After that
//! line the stream is a run of chunks, each a big-endian `u32` length and
//! that many bytes of stdout; a zero length ends the output, and the
//! status, as `work status` replies it, follows until the stream ends.
//! A stream that ends between chunks without the zero length (the unit
//! was released, the executor stopped) is output without a status.

use std::io::{self, Read};

use crate::work::state::Status;

/// The request field that asks for a framed stream with a status.
pub const ASK: &str = "statustrailer";
/// Ends the reply line of an executor that frames the stream.
pub const HEADER_SUFFIX: &str = " with status";
/// The chunk length's size, in front of every chunk.
pub const LEN: usize = 4;
/// A status larger than this is refused rather than buffered.
const MAX_STATUS: usize = 64 * 1024;

/// The chunk held in `buf[LEN..LEN + n]`, with its length written in
/// front, ready to be sent in one write.
pub fn chunk(buf: &mut [u8], n: usize) -> &[u8] {
    let len = u32::try_from(n).expect("a results chunk fits a u32");
    buf[..LEN].copy_from_slice(&len.to_be_bytes());
    &buf[..LEN + n]
}

/// The end of the output and the status that follows it.
pub fn end(status_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN + status_json.len());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(status_json.as_bytes());
    out
}

/// Whether the reply line `line` says the stream is framed.
pub fn framed_reply(line: &str) -> bool {
    line.ends_with(HEADER_SUFFIX)
}

/// Reads the output of a results stream, framed or plain; after the end,
/// [`status`](Self::status) holds the status a framed stream ended with.
/// A read that fails (a stall timeout) loses nothing: the next one goes
/// on where it stopped, within a length too.
pub struct Reader<R> {
    inner: R,
    state: State,
    status: Option<Status>,
}

enum State {
    Plain,
    /// Reading a chunk length, `have` of its bytes so far.
    Length {
        bytes: [u8; LEN],
        have: usize,
    },
    /// Inside a chunk, this many bytes still to come.
    Chunk(u32),
    /// After the zero length: the status, so far.
    Status(Vec<u8>),
    Done,
}

impl<R: Read> Reader<R> {
    pub fn plain(inner: R) -> Reader<R> {
        Reader {
            inner,
            state: State::Plain,
            status: None,
        }
    }

    pub fn framed(inner: R) -> Reader<R> {
        Reader {
            inner,
            state: State::Length {
                bytes: [0; LEN],
                have: 0,
            },
            status: None,
        }
    }

    /// The status the stream ended with, once it ended with one.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Reads a chunk length, or the status once the output ended; `true`
    /// when the stream is over.
    fn read_framing(&mut self) -> io::Result<bool> {
        match &mut self.state {
            State::Length { bytes, have } => {
                let n = self.inner.read(&mut bytes[*have..])?;
                if n == 0 {
                    if *have > 0 {
                        return Err(cut("a chunk length"));
                    }
                    self.state = State::Done;
                    return Ok(true);
                }
                *have += n;
                if *have == LEN {
                    self.state = match u32::from_be_bytes(*bytes) {
                        0 => State::Status(Vec::new()),
                        len => State::Chunk(len),
                    };
                }
                Ok(false)
            }
            State::Status(text) => {
                let mut buf = [0u8; 4096];
                let n = self.inner.read(&mut buf)?;
                if n > 0 {
                    if text.len() + n > MAX_STATUS {
                        return Err(invalid("a results stream's status is too long".into()));
                    }
                    text.extend_from_slice(&buf[..n]);
                    return Ok(false);
                }
                let status = serde_json::from_slice(text).map_err(|e| {
                    invalid(format!("a results stream ended with a bad status: {e}"))
                })?;
                self.status = Some(status);
                self.state = State::Done;
                Ok(true)
            }
            State::Plain | State::Chunk(_) | State::Done => Ok(true),
        }
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Plain => return self.inner.read(out),
                State::Done => return Ok(0),
                State::Chunk(left) => {
                    let room = out.len().min(left as usize);
                    if room == 0 {
                        return Ok(0);
                    }
                    let n = self.inner.read(&mut out[..room])?;
                    if n == 0 {
                        return Err(cut("a chunk"));
                    }
                    // `n <= room <= left`, a u32.
                    let left = left - n as u32;
                    self.state = match left {
                        0 => State::Length {
                            bytes: [0; LEN],
                            have: 0,
                        },
                        _ => State::Chunk(left),
                    };
                    return Ok(n);
                }
                State::Length { .. } | State::Status(_) => {
                    if self.read_framing()? {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

fn cut(inside: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("results stream cut inside {inside}"),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Hands out `data` in reads of the given sizes, failing with
    /// `TimedOut` at each 0 in the plan; after the plan, all at once.
    struct Trickle {
        data: VecDeque<u8>,
        plan: VecDeque<usize>,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let step = self.plan.pop_front().unwrap_or(usize::MAX);
            if step == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let n = step.min(out.len()).min(self.data.len());
            for b in out.iter_mut().take(n) {
                *b = self.data.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    fn trickle(data: &[u8], plan: &[usize]) -> Trickle {
        Trickle {
            data: data.iter().copied().collect(),
            plan: plan.iter().copied().collect(),
        }
    }

    const STATUS: &str = r#"{"State":2,"Detail":"exit status 0","StdoutSize":11,"WorkType":"echo","ExtraData":null}"#;

    fn framed_stream(chunks: &[&[u8]], status: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            let mut buf = vec![0u8; LEN + c.len()];
            buf[LEN..].copy_from_slice(c);
            out.extend_from_slice(chunk(&mut buf, c.len()));
        }
        if let Some(s) = status {
            out.extend_from_slice(&end(s));
        }
        out
    }

    /// Reads to the end through timeouts, as the fetcher does; the
    /// output, and the error that stopped it if one did.
    fn drain<R: Read>(r: &mut Reader<R>) -> (Vec<u8>, Option<io::Error>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[test]
    fn output_then_status_through_any_split_and_timeouts() {
        let stream = framed_stream(&[b"hello ", b"world"], Some(STATUS));
        let plans: [&[usize]; 4] = [&[], &[1; 200], &[3, 0, 1, 0, 2, 7, 0, 1], &[2, 0, 0, 9]];
        for plan in plans {
            let mut r = Reader::framed(trickle(&stream, plan));
            let (got, err) = drain(&mut r);
            assert!(err.is_none(), "{plan:?}: {err:?}");
            assert_eq!(got, b"hello world", "{plan:?}");
            let st = r.status().expect("status");
            assert_eq!((st.state, st.stdout_size), (2, 11));
            assert_eq!(st.detail, "exit status 0");
        }
    }

    #[test]
    fn a_stream_that_ends_between_chunks_is_output_without_status() {
        let stream = framed_stream(&[b"partial"], None);
        let mut r = Reader::framed(trickle(&stream, &[]));
        let (got, err) = drain(&mut r);
        assert!(err.is_none());
        assert_eq!(got, b"partial");
        assert!(r.status().is_none());
        assert!(Reader::framed(trickle(b"", &[])).status().is_none());
    }

    #[test]
    fn a_stream_cut_inside_a_chunk_or_its_length_fails_after_what_came() {
        let stream = framed_stream(&[b"abcdef"], Some(STATUS));
        for (keep, delivered) in [(LEN + 3, &b"abc"[..]), (2, &b""[..])] {
            let mut r = Reader::framed(trickle(&stream[..keep], &[]));
            let (got, err) = drain(&mut r);
            assert_eq!(got, delivered);
            assert_eq!(err.unwrap().kind(), io::ErrorKind::UnexpectedEof);
            assert!(r.status().is_none());
        }
    }

    #[test]
    fn a_bad_or_oversized_status_is_refused() {
        let mut r = Reader::framed(trickle(&framed_stream(&[b"x"], Some("{nope")), &[]));
        let (got, err) = drain(&mut r);
        assert_eq!(got, b"x");
        assert_eq!(err.unwrap().kind(), io::ErrorKind::InvalidData);
        let huge = "x".repeat(MAX_STATUS + 1);
        let mut r = Reader::framed(trickle(&framed_stream(&[], Some(&huge)), &[]));
        assert_eq!(drain(&mut r).1.unwrap().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_plain_stream_passes_through_untouched() {
        let bytes = framed_stream(&[b"looks framed"], Some(STATUS));
        let mut r = Reader::plain(trickle(&bytes, &[1, 0, 3]));
        let (got, err) = drain(&mut r);
        assert!(err.is_none());
        assert_eq!(got, bytes);
        assert!(r.status().is_none());
    }

    #[test]
    fn the_reply_line_says_whether_the_stream_is_framed() {
        assert!(framed_reply(&format!(
            "Streaming results for work unit abc{HEADER_SUFFIX}"
        )));
        assert!(!framed_reply("Streaming results for work unit abc"));
    }
}
