//! Just enough of an HTTP/1.1 response parser: the status, where the response ends
//! (`Content-Length` or `Transfer-Encoding: chunked`), and whether the server will close.

use std::fmt;

/// The longest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
const PREFIX: &[u8] = b"HTTP/1.";

#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    Complete(Response),
}

#[derive(Debug, PartialEq)]
pub struct Response {
    /// Bytes of the buffer this response takes, head and body.
    pub len: usize,
    pub status: u16,
    /// `Connection: close`: the server closes after it.
    pub close: bool,
}

#[derive(Debug, PartialEq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The first response at the start of `buf`: complete, incomplete (wait for more bytes),
/// or an error (the connection cannot be trusted any more).
pub fn parse_response(buf: &[u8]) -> Result<Parsed, ParseError> {
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(ParseError("not an HTTP/1.x response"));
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ParseError("response head too long"));
        }
        return Ok(Parsed::Incomplete);
    };
    let mut lines = buf[..head_end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ParseError("header line without a colon"));
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_decimal(value).ok_or(ParseError("bad Content-Length"))?;
            if content_length.is_some_and(|c| c != v) {
                return Err(ParseError("conflicting Content-Length headers"));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ParseError("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let body_start = head_end + 4;
    let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
        Some(0)
    } else if chunked {
        chunked_len(&buf[body_start..])?
    } else if let Some(len) = content_length {
        (buf.len() - body_start >= len).then_some(len)
    } else {
        return Err(ParseError(
            "response without Content-Length or chunked encoding (read-until-close is not supported)",
        ));
    };
    Ok(match body_len {
        Some(b) => Parsed::Complete(Response {
            len: body_start + b,
            status,
            close,
        }),
        None => Parsed::Incomplete,
    })
}

fn parse_status_line(line: &[u8]) -> Result<u16, ParseError> {
    // "HTTP/1.1 200 OK"; the reason phrase may be empty or absent.
    let bad = ParseError("bad status line");
    if line.len() < 12 || !line.starts_with(PREFIX) || !line[7].is_ascii_digit() || line[8] != b' '
    {
        return Err(bad);
    }
    let code = &line[9..12];
    if line.len() > 12 && line[12] != b' ' {
        return Err(bad);
    }
    let status = parse_decimal(code).ok_or(bad)?;
    u16::try_from(status)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or(ParseError("bad status code"))
}

/// The length of a complete chunked body at the start of `b`, through its last-chunk
/// and trailers; None while incomplete.
fn chunked_len(b: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut pos = 0;
    loop {
        let Some(eol) = find(&b[pos..], b"\r\n") else {
            return too_long_or_incomplete(b.len() - pos);
        };
        let line = &b[pos..pos + eol];
        let size = line.split(|&c| c == b';').next().unwrap_or_default();
        let size = parse_hex(size.trim_ascii()).ok_or(ParseError("bad chunk size"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = find(&b[pos..], b"\r\n") else {
                    return too_long_or_incomplete(b.len() - pos);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        let data_end = pos
            .checked_add(size)
            .ok_or(ParseError("chunk size too large"))?;
        if b.len() < data_end + 2 {
            return Ok(None);
        }
        if &b[data_end..data_end + 2] != b"\r\n" {
            return Err(ParseError("chunk data not followed by CRLF"));
        }
        pos = data_end + 2;
    }
}

fn too_long_or_incomplete(pending: usize) -> Result<Option<usize>, ParseError> {
    if pending > MAX_LINE {
        Err(ParseError("chunk-size or trailer line too long"))
    } else {
        Ok(None)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |acc, &d| acc * 10 + usize::from(d - b'0')))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc * 16 + v as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Response {
        match parse_response(buf) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-y: z\r\n\r\nok";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;ext=1\r\nabcd\r\na\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn content_length() {
        let r = complete(OK);
        assert_eq!(
            r,
            Response {
                len: OK.len(),
                status: 200,
                close: false
            }
        );
        let upper = b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH:  0 \r\n\r\n";
        assert_eq!(complete(upper).len, upper.len());
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(complete(close).close);
    }

    #[test]
    fn chunked() {
        assert_eq!(complete(CHUNKED).len, CHUNKED.len());
        let plain = b"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n";
        assert_eq!(complete(plain).len, plain.len());
        let mut two = plain.to_vec();
        two.extend_from_slice(OK);
        assert_eq!(complete(&two).len, plain.len());
    }

    #[test]
    fn two_responses_in_one_buffer() {
        let mut buf = OK.to_vec();
        buf.extend_from_slice(CHUNKED);
        let first = complete(&buf);
        assert_eq!(first.len, OK.len());
        let second = complete(&buf[first.len..]);
        assert_eq!(second.len, CHUNKED.len());
    }

    #[test]
    fn split_across_reads() {
        for whole in [OK, CHUNKED] {
            for cut in 0..whole.len() {
                assert_eq!(
                    parse_response(&whole[..cut]),
                    Ok(Parsed::Incomplete),
                    "cut at {cut} of {:?}",
                    String::from_utf8_lossy(whole)
                );
            }
            assert_eq!(complete(whole).len, whole.len());
        }
    }

    #[test]
    fn status_codes() {
        let r = complete(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer\r\n\r\n",
        );
        assert_eq!(r.status, 401);
        assert_eq!(complete(b"HTTP/1.1 204\r\n\r\n").status, 204);
        assert_eq!(
            complete(b"HTTP/1.0 503 \r\ncontent-length: 1\r\n\r\nx").status,
            503
        );
    }

    #[test]
    fn garbage() {
        for bad in [
            &b"HTTX/1.1 200 OK\r\n\r\n"[..],
            b"<html>",
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = [b'x'; 10];
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(parse_response(&endless).is_err());
        assert!(parse_response(&long).is_err());
    }
}
