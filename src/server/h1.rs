//! A small HTTP/1.1 server connection for a listener whose every answer depends on the
//! request head alone: `authz_http`. It replaces actix-http's dispatcher there because a
//! check is a signature plus a few microseconds, and the dispatcher's general machinery
//! (payload streams, service readiness, per-request objects) cost about as much as the
//! whole decision around the signature (`BENCHMARKS.md`).
//!
//! It keeps the limits actix-http gave the listener:
//!
//! - a head larger than [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] lines: `431`;
//!   a malformed head, request target or `content-length`: `400`; both then close;
//! - the next head must be complete within [`Limits::request_timeout`] of the connection's
//!   start or of the previous answer: a partial head then gets `408`, an idle kept-alive
//!   connection is closed silently (keep-alive's end);
//! - a `content-length` body up to [`MAX_SKIPPED_BODY`] is read and discarded (it must
//!   also arrive within the head timeout); a larger one, a `transfer-encoding` body, or a
//!   body behind `expect: 100-continue` is answered, then the connection closes, so that
//!   no body byte is ever read as a request head;
//! - `HEAD` answers carry no body; HTTP/1.0 closes unless it asked for keep-alive;
//! - a client may half-close after its requests: they are still answered;
//! - pipelined requests are answered in order;
//! - on graceful shutdown an idle connection closes at once, a request in flight is
//!   answered first;
//! - closing: the answer, then this side's write half, then whatever the client still
//!   sends is read and dropped for up to [`Limits::disconnect_timeout`], so that unread
//!   bytes do not turn the close into a reset that destroys the answer.

use std::future::Future;
use std::io::{ErrorKind, Write as _};
use std::pin::{Pin, pin};
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::token::extract::is_tchar;

/// Largest request head (request line and headers), actix-http's fixed limit.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;
/// Most header lines in a request head, actix-http's fixed limit.
pub const MAX_HEADERS: usize = 96;
/// Largest `content-length` body read and discarded to keep the connection; a larger
/// one is answered and the connection closed.
pub const MAX_SKIPPED_BODY: u64 = 1024 * 1024;

/// Bytes read per `read` call at least (the buffer grows by this much when full).
const READ_CHUNK: usize = 8 * 1024;

/// The connection's timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a complete head (and the body to skip) after the connection opens or
    /// the previous answer; also the keep-alive time of an idle connection.
    pub request_timeout: Duration,
    /// Time the client gets to close its side after the last answer.
    pub disconnect_timeout: Duration,
}

/// One request head as the handler sees it.
#[derive(Debug)]
pub struct Head<'a> {
    /// The method (an HTTP token).
    pub method: &'a str,
    /// The request target's path and query (`/` for an absolute-form target without one).
    pub target: &'a str,
    /// The header lines, in order, names as sent.
    pub headers: &'a [httparse::Header<'a>],
}

/// Answers requests from their heads.
pub trait Handler {
    /// Writes the answer to `head` into `answer` (status `500` if it sets none).
    fn answer<'a>(
        &'a self,
        head: &'a Head<'a>,
        answer: &'a mut Answer,
    ) -> impl Future<Output = ()> + 'a;
}

/// An answer being built: status, header lines and body. The framing headers
/// (`content-length`, `date`, `connection`) are the connection's.
#[derive(Debug, Default)]
pub struct Answer {
    status: u16,
    headers: Vec<u8>,
    body: Vec<u8>,
}

/// The connection's state between requests.
struct Conn<'h, H> {
    io: TcpStream,
    handler: &'h H,
    limits: Limits,
    /// Received bytes not yet consumed.
    buf: Vec<u8>,
    /// The encoded answer.
    out: Vec<u8>,
    answer: Answer,
    /// Body bytes still to discard before the next head.
    skip: u64,
}

/// What one parse of the buffer found.
enum Parsed {
    /// Not a complete head yet.
    Partial,
    /// A complete request was answered: consume `len` bytes, then skip `body`.
    Answered { len: usize, body: u64, close: bool },
    /// The client gets this status and the connection closes.
    Refuse(u16),
}

/// What the connection waited for.
enum Event {
    Stop,
    Timeout,
    Read(std::io::Result<usize>),
}

/// How the request's body is framed.
enum Body {
    /// `len` bytes (0: none).
    Length(u64),
    /// Framed some other way (`transfer-encoding`): the connection cannot be reused.
    Unknown,
}

/// What a head says about its connection and body.
struct Framing {
    body: Body,
    keep_alive: bool,
    expects_continue: bool,
}

/// Serves one connection until it closes. `stop` resolves when the server begins a
/// graceful shutdown.
pub async fn serve<H: Handler>(
    io: TcpStream,
    handler: &H,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let _ = io.set_nodelay(true);
    let mut conn = Conn {
        io,
        handler,
        limits,
        buf: Vec::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(512),
        answer: Answer::default(),
        skip: 0,
    };
    let mut stop = pin!(stop);
    let mut stopping = false;
    let mut timer = pin!(tokio::time::sleep(limits.request_timeout));
    // Bytes of `buf` already searched for the end of a head: a head arriving in many
    // small pieces is parsed once it is complete, not once per piece.
    let mut scanned = 0;
    loop {
        if conn.skip > 0 {
            let n = usize::try_from(conn.skip).map_or(conn.buf.len(), |s| s.min(conn.buf.len()));
            conn.buf.drain(..n);
            conn.skip -= n as u64;
            scanned = 0;
        }
        // Parsed when a head may be complete, and on its first bytes (garbage is refused
        // at once).
        let parse = !conn.buf.is_empty() && (scanned == 0 || head_ends(&conn.buf, scanned));
        if conn.skip == 0 && parse {
            match conn.next(stop.as_mut(), &mut stopping).await? {
                Parsed::Answered { len, body, close } => {
                    if close {
                        return conn.close().await;
                    }
                    conn.buf.drain(..len);
                    if conn.buf.is_empty() && conn.buf.capacity() > 4 * READ_CHUNK {
                        // A large head is over: do not keep its buffer while idle.
                        conn.buf = Vec::with_capacity(READ_CHUNK);
                    }
                    conn.skip = body;
                    scanned = 0;
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + limits.request_timeout);
                    continue;
                }
                Parsed::Refuse(status) => return conn.refuse(status).await,
                Parsed::Partial => {}
            }
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return conn.refuse(431).await;
        }
        scanned = conn.buf.len();
        let idle = conn.buf.is_empty() && conn.skip == 0;
        if conn.buf.capacity() - conn.buf.len() < READ_CHUNK / 2 {
            conn.buf.reserve(READ_CHUNK);
        }
        // `read_buf`, not `readable` + `try_read`: tokio takes a short read as proof that
        // the socket is drained and waits for the next event, where `try_read` would
        // need a second `recv` answering `EAGAIN` after every request.
        let event = tokio::select! {
            biased;
            () = &mut stop, if idle && !stopping => Event::Stop,
            () = &mut timer => Event::Timeout,
            read = conn.io.read_buf(&mut conn.buf) => Event::Read(read),
        };
        match event {
            Event::Stop => return Ok(()),
            Event::Timeout if idle || conn.skip > 0 => return Ok(()),
            Event::Timeout => return conn.refuse(408).await,
            // The client is done sending: everything complete was answered.
            Event::Read(Ok(0)) => return Ok(()),
            Event::Read(Ok(_)) => {}
            Event::Read(Err(e)) => return Err(e),
        }
    }
}

// === impl Conn ===

impl<H: Handler> Conn<'_, H> {
    /// Parses the buffer; answers a complete request. An answer given once `stop` has
    /// resolved (`stopping`) is the connection's last.
    async fn next<S: Future<Output = ()>>(
        &mut self,
        stop: Pin<&mut S>,
        stopping: &mut bool,
    ) -> std::io::Result<Parsed> {
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut lines);
        let len = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Ok(Parsed::Refuse(431)),
            Err(_) => return Ok(Parsed::Refuse(400)),
        };
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Ok(Parsed::Refuse(400));
        };
        let Some(target) = origin_form(target) else {
            return Ok(Parsed::Refuse(400));
        };
        let Some(framing) = framing(version, req.headers) else {
            return Ok(Parsed::Refuse(400));
        };
        let head = Head {
            method,
            target,
            headers: req.headers,
        };
        self.answer.clear();
        self.handler.answer(&head, &mut self.answer).await;
        if !*stopping {
            // A shutdown that began during the check: this answer is the last.
            *stopping = stop
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready();
        }
        let keep_alive = framing.keep_alive && !*stopping;
        let (body, close) = match framing.body {
            Body::Length(0) => (0, !keep_alive),
            Body::Length(n) if n <= MAX_SKIPPED_BODY && !framing.expects_continue => {
                (n, !keep_alive)
            }
            Body::Length(_) | Body::Unknown => (0, true),
        };
        let head_only = method == "HEAD";
        self.answer.encode(&mut self.out, close, head_only);
        self.write_out().await?;
        Ok(Parsed::Answered { len, body, close })
    }

    /// Writes the encoded answer; a client that does not read it within
    /// [`Limits::request_timeout`] is given up on.
    async fn write_out(&self) -> std::io::Result<()> {
        // Writes what the socket takes now; `bytes` keeps the rest.
        let write_some = |bytes: &mut &[u8]| match self.io.try_write(bytes) {
            Ok(n) => {
                *bytes = &bytes[n..];
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        };
        let mut bytes = &self.out[..];
        // Nearly always the whole answer goes at once, with no timer.
        write_some(&mut bytes)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let rest = async {
            while !bytes.is_empty() {
                self.io.writable().await?;
                write_some(&mut bytes)?;
            }
            Ok(())
        };
        tokio::time::timeout(self.limits.request_timeout, rest)
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "the client does not read"))?
    }

    /// Answers `status` with no body, and closes.
    async fn refuse(mut self, status: u16) -> std::io::Result<()> {
        self.answer.clear();
        self.answer.status(status);
        self.answer.encode(&mut self.out, true, false);
        self.write_out().await?;
        self.close().await
    }

    /// Closes after the last answer: this side's write half, then the client's remaining
    /// bytes dropped until it closes or [`Limits::disconnect_timeout`].
    async fn close(mut self) -> std::io::Result<()> {
        let _ = self.io.shutdown().await;
        let drain = async {
            let mut scratch = [0u8; 4096];
            loop {
                if self.io.readable().await.is_err() {
                    return;
                }
                match self.io.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(self.limits.disconnect_timeout, drain).await;
        Ok(())
    }
}

// === impl Answer ===

impl Answer {
    /// Sets the status.
    pub fn status(&mut self, status: u16) {
        self.status = status;
    }

    /// Adds a header line. A name that is not an HTTP token, or a value with a control
    /// character (a CR or LF would split the answer), is not added: returns false.
    pub fn header(&mut self, name: &str, value: &[u8]) -> bool {
        if name.is_empty()
            || !name.bytes().all(is_tchar)
            || !value
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            return false;
        }
        self.headers.extend_from_slice(name.as_bytes());
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value);
        self.headers.extend_from_slice(b"\r\n");
        true
    }

    /// Sets the body.
    pub fn body(&mut self, body: &[u8]) {
        self.body.clear();
        self.body.extend_from_slice(body);
    }

    fn clear(&mut self) {
        self.status = 0;
        self.headers.clear();
        self.body.clear();
    }

    /// The whole answer, framed, into `out`.
    fn encode(&self, out: &mut Vec<u8>, close: bool, head_only: bool) {
        let status = if (100..1000).contains(&self.status) {
            self.status
        } else {
            500
        };
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
            reason(status),
            self.body.len()
        );
        date(out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(&self.headers);
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The request target as a path and query: origin-form as sent, absolute-form without
/// its scheme and authority. None for bytes outside visible ASCII (or an empty target).
fn origin_form(target: &str) -> Option<&str> {
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let lower = |p: &str| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let rest = if lower("http://") {
        &target[7..]
    } else if lower("https://") {
        &target[8..]
    } else {
        return Some(target);
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(&rest[i..]),
        // `http://host?q`: the path is empty, which HTTP reads as `/`; the query is kept
        // only in origin-form, so it is dropped with the authority here.
        _ => Some("/"),
    }
}

/// How a request is framed, from its version and headers (one pass); None when
/// `content-length` is malformed or ambiguous.
fn framing(version: u8, headers: &[httparse::Header<'_>]) -> Option<Framing> {
    let mut length: Option<u64> = None;
    let mut encoded = false;
    let (mut close, mut keep) = (false, false);
    let mut expects_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expects_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    Some(Framing {
        // With `transfer-encoding`, `content-length` does not frame the body (RFC 9112 §6.3).
        body: if encoded {
            Body::Unknown
        } else {
            Body::Length(length.unwrap_or(0))
        },
        keep_alive: !close && (version >= 1 || keep),
        expects_continue,
    })
}

/// Whether `buf[from..]` (with the three bytes before it) holds the blank line that ends
/// a head: `\n\r\n` or a bare `\n\n`.
fn head_ends(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && buf.get(start + i + 2) == Some(&b'\n')))
}

/// The reason phrase of `status` (empty for an unregistered code).
fn reason(status: u16) -> &'static str {
    actix_web::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

thread_local! {
    /// The `date` header line of the current second, formatted once per second per
    /// worker.
    static DATE: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends the `date` header line (RFC 9110 §6.6.1: an origin server with a clock sends it).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, line)| {
        if *at != second {
            line.clear();
            line.extend_from_slice(b"date: ");
            line.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            line.extend_from_slice(b"\r\n");
            *at = second;
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    use super::*;

    /// Answers 200 with `method target` as the body, and an `x-seen` header echoing
    /// `x-in` when it is sent; `/slow` after 300 ms.
    struct Echo;

    impl Handler for Echo {
        async fn answer<'a>(&'a self, head: &'a Head<'a>, answer: &'a mut Answer) {
            if head.target == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            answer.status(200);
            if let Some(h) = head.headers.iter().find(|h| h.name == "x-in") {
                answer.header("x-seen", h.value);
            }
            answer.body(format!("{} {}", head.method, head.target).as_bytes());
        }
    }

    const LIMITS: Limits = Limits {
        request_timeout: Duration::from_millis(600),
        disconnect_timeout: Duration::from_millis(300),
    };

    /// Serves `Echo` on a loopback port, on its own thread, until the test ends; the
    /// returned sender starts a graceful shutdown.
    fn server() -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .unwrap_or_else(|e| panic!("{e}"));
                loop {
                    let Ok((io, _)) = listener.accept().await else {
                        return;
                    };
                    let mut stop = stop_rx.clone();
                    tokio::task::spawn_local(async move {
                        let stop = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        let _ = serve(io, &Echo, LIMITS, stop).await;
                    });
                }
            });
        });
        (addr, stop_tx)
    }

    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// Everything the server sends until it closes.
    fn read_to_close(s: &mut std::net::TcpStream) -> String {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    }

    /// Sends `raw` and reads until the server closes.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = connect(addr);
        s.write_all(raw).unwrap_or_else(|e| panic!("write: {e}"));
        read_to_close(&mut s)
    }

    fn statuses(all: &str) -> Vec<&str> {
        all.match_indices("HTTP/1.1 ")
            .map(|(i, _)| &all[i + 9..i + 12])
            .collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
        let (addr, _stop) = server();
        let all = exchange(
            addr,
            b"GET /a?x=1 HTTP/1.1\r\nhost: h\r\n\r\n\
              POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello\
              GET http://h/c?y HTTP/1.1\r\nx-in: v\r\nconnection: close\r\n\r\n\
              GET /never HTTP/1.1\r\n\r\n",
        );
        assert_eq!(statuses(&all), ["200", "200", "200"], "{all}");
        assert!(all.contains("\r\n\r\nGET /a?x=1"), "{all}");
        assert!(all.contains("\r\n\r\nPOST /b"), "{all}");
        assert!(all.contains("x-seen: v\r\n"), "{all}");
        assert!(all.ends_with("\r\n\r\nGET /c?y"), "{all}");
        assert!(all.contains("connection: close\r\n"), "{all}");
        assert!(all.contains("date: "), "{all}");
        assert!(!all.contains("/never"), "{all}");
    }

    #[test]
    fn head_answers_have_no_body_and_http10_closes() {
        let (addr, _stop) = server();
        let all = exchange(addr, b"HEAD /h HTTP/1.0\r\n\r\n");
        assert_eq!(statuses(&all), ["200"], "{all}");
        assert!(all.contains("content-length: 7\r\n"), "{all}");
        assert!(all.ends_with("\r\n\r\n"), "{all}");
    }

    #[test]
    fn bodies_that_cannot_be_skipped_are_answered_then_closed() {
        let (addr, _stop) = server();
        for raw in [
            &b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nGET /x\r\n0\r\n\r\n"[..],
            b"POST /c HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /c HTTP/1.1\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
            b"POST /c HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
        ] {
            let all = exchange(addr, raw);
            assert_eq!(statuses(&all), ["200"], "{all}");
            assert!(all.contains("connection: close\r\n"), "{all}");
        }
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        let (addr, _stop) = server();
        for (raw, want) in [
            (
                b"GET /a HTTP/1.1\r\ncontent-length: 1x\r\n\r\n".to_vec(),
                "400",
            ),
            (
                b"GET /a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(),
                "400",
            ),
            (b"GET /a HTTP/1.1\r\nbad header\r\n\r\n".to_vec(), "400"),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n".to_vec(), "400"),
            (
                (0..100)
                    .fold(b"GET / HTTP/1.1\r\n".to_vec(), |mut v, i| {
                        v.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
                        v
                    })
                    .into_iter()
                    .chain(*b"\r\n")
                    .collect(),
                "431",
            ),
            (
                {
                    let mut v = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
                    v.resize(MAX_HEAD_BYTES, b'a');
                    v
                },
                "431",
            ),
        ] {
            let all = exchange(addr, &raw);
            assert_eq!(statuses(&all), [want], "{all}");
        }
    }

    #[test]
    fn a_partial_head_times_out_with_408_and_an_idle_connection_silently() {
        let (addr, _stop) = server();
        let mut partial = connect(addr);
        partial
            .write_all(b"GET / HTTP/1.1\r\nx-slow: ")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut idle = connect(addr);
        idle.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let t = std::time::Instant::now();
        let all = read_to_close(&mut partial);
        assert_eq!(statuses(&all), ["408"], "{all}");
        let all = read_to_close(&mut idle);
        assert_eq!(statuses(&all), ["200"], "{all}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn a_half_closed_client_still_gets_its_answers() {
        let (addr, _stop) = server();
        let mut s = connect(addr);
        s.write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        s.shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let all = read_to_close(&mut s);
        assert_eq!(statuses(&all), ["200", "200"], "{all}");
    }

    #[test]
    fn a_head_in_pieces_is_answered_once_complete() {
        let (addr, _stop) = server();
        let mut s = connect(addr);
        for piece in [
            &b"GET /p"[..],
            b"iece HTTP/1.1\r\nx-in: 1\r",
            b"\n",
            b"\r\n",
        ] {
            s.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_millis(30));
        }
        s.write_all(b"GET /bare HTTP/1.1\n\n")
            .unwrap_or_else(|e| panic!("{e}"));
        s.shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        let all = read_to_close(&mut s);
        assert_eq!(statuses(&all), ["200", "200"], "{all}");
        assert!(all.contains("GET /piece"), "{all}");
        assert!(all.ends_with("GET /bare"), "{all}");
    }

    #[test]
    fn graceful_shutdown_closes_idle_connections_at_once() {
        let (addr, stop) = server();
        let mut s = connect(addr);
        s.write_all(b"GET /1 HTTP/1.1\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut first = [0u8; 12];
        s.read_exact(&mut first).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&first, b"HTTP/1.1 200");
        let t = std::time::Instant::now();
        let _ = stop.send(true);
        let _ = read_to_close(&mut s);
        assert!(
            t.elapsed() < LIMITS.request_timeout / 2,
            "closed after {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_check_in_flight_at_shutdown_gets_its_answer_then_the_connection_closes() {
        let (addr, stop) = server();
        let mut s = connect(addr);
        s.write_all(b"GET /slow HTTP/1.1\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(100));
        let _ = stop.send(true);
        let all = read_to_close(&mut s);
        assert_eq!(statuses(&all), ["200"], "{all}");
        assert!(all.contains("connection: close\r\n"), "{all}");
        assert!(all.ends_with("GET /slow"), "{all}");
    }

    #[test]
    fn header_values_that_would_split_the_answer_are_not_added() {
        let mut a = Answer::default();
        assert!(a.header("x-ok", b"v 1\tx"));
        assert!(!a.header("x-bad", b"v\r\nset-cookie: x"));
        assert!(!a.header("x bad", b"v"));
        assert!(!a.header("", b"v"));
        assert_eq!(a.headers, b"x-ok: v 1\tx\r\n");
    }

    #[test]
    fn absolute_form_targets_become_paths() {
        assert_eq!(origin_form("/a?b"), Some("/a?b"));
        assert_eq!(origin_form("HTTP://h:1/a?b"), Some("/a?b"));
        assert_eq!(origin_form("https://h"), Some("/"));
        assert_eq!(origin_form("http://h?q"), Some("/"));
        assert_eq!(origin_form("*"), Some("*"));
        assert_eq!(origin_form("/\u{e9}"), None);
    }
}
