//! A real HTTP server on loopback that serves a JWK set (and an OIDC discovery document)
//! and that the test reconfigures while tokengate runs: new content, ETag and
//! Cache-Control, errors, garbage, huge bodies, hangs and connection resets.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers `/jwks.json`.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with the body (or 304 when If-None-Match matches the ETag).
    Serve,
    /// This status, empty body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with this many bytes of valid-looking JSON padding.
    Huge(usize),
    /// Never answers (until the mode changes or the server stops).
    Hang,
    /// Closes the connection without answering.
    Reset,
}

/// What the server serves.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// The JWK set document.
    pub body: String,
    /// ETag to send (and honour in If-None-Match).
    pub etag: Option<String>,
    /// Cache-Control to send.
    pub cache_control: Option<String>,
    /// Answer mode.
    pub mode: Mode,
}

/// The running server.
pub struct JwksServer {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<Behavior>>,
    hits: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl JwksServer {
    /// Starts serving `body` on a free loopback port.
    pub fn start(body: &str) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(Behavior {
            body: body.to_string(),
            etag: None,
            cache_control: None,
            mode: Mode::Serve,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, h, nm, st) = (
            state.clone(),
            hits.clone(),
            not_modified.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, h, nm, st) = (s.clone(), h.clone(), nm.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, addr, &s, &h, &nm, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        JwksServer {
            addr,
            state,
            hits,
            not_modified,
            stop,
        }
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// The issuer base URL (discovery at `/.well-known/openid-configuration`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what is served.
    pub fn set(&self, f: impl FnOnce(&mut Behavior)) {
        let mut b = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut b);
    }

    /// Requests for `/jwks.json` so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// 304 answers so far.
    pub fn not_modified(&self) -> usize {
        self.not_modified.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut conn: TcpStream,
    addr: SocketAddr,
    state: &Mutex<Behavior>,
    hits: &AtomicUsize,
    not_modified: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut if_none_match = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(v.trim().to_string());
        }
    }
    if path == "/.well-known/openid-configuration" {
        let body =
            format!("{{\"issuer\":\"http://{addr}\",\"jwks_uri\":\"http://{addr}/jwks.json\"}}");
        respond(
            &mut conn,
            200,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        return;
    }
    if path != "/jwks.json" {
        respond(&mut conn, 404, &[], b"");
        return;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let b = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match b.mode {
        Mode::Serve => {
            let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
            if let Some(e) = &b.etag {
                headers.push(("etag", e));
                if if_none_match.as_deref() == Some(e.as_str()) {
                    not_modified.fetch_add(1, Ordering::SeqCst);
                    respond(&mut conn, 304, &headers, b"");
                    return;
                }
            }
            if let Some(cc) = &b.cache_control {
                headers.push(("cache-control", cc));
            }
            respond(&mut conn, 200, &headers, b.body.as_bytes());
        }
        Mode::Status(s) => respond(&mut conn, s, &[], b""),
        Mode::Garbage => respond(
            &mut conn,
            200,
            &[("content-type", "application/json")],
            b"<html>not json",
        ),
        Mode::Huge(n) => {
            let mut body = b"{\"keys\":[],\"pad\":\"".to_vec();
            body.resize(n, b'a');
            body.extend_from_slice(b"\"}");
            respond(
                &mut conn,
                200,
                &[("content-type", "application/json")],
                &body,
            );
        }
        Mode::Hang => {
            for _ in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Mode::Reset => {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}
