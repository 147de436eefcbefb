//! A small HTTP/1.1 upstream on loopback for the serving tests: it answers every request
//! with a JSON echo of what it received (method, path, every header line in order, the
//! number of body bytes), reads request bodies as they arrive (so a test can watch a
//! streamed body come in), and can be told to answer late or never. Plain threads and
//! `std::net`, so that nothing in it shares code with the proxy under test.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// At once.
    Echo,
    /// After this long (the body is read first).
    Delay(Duration),
    /// Never: reads the request, then holds the connection until dropped.
    Hang,
}

/// A running upstream; stopped on drop.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    mode: Mode,
    /// Request heads received.
    requests: AtomicUsize,
    /// Body bytes received, over all requests, updated as they are read.
    body_bytes: AtomicU64,
    stop: AtomicBool,
    last: Mutex<Option<Value>>,
}

impl Upstream {
    /// Starts one on a free loopback port.
    pub fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("upstream bind");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            mode,
            requests: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last: Mutex::new(None),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Upstream { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request heads received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Body bytes received so far (all requests).
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    /// The echo of the last complete request.
    pub fn last(&self) -> Option<Value> {
        self.state
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for `cond`; true when it held.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Upstream) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond(self)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Every value of header `name` in an echo, in order.
pub fn header_values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|pair| {
                    pair[0]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .filter_map(|pair| pair[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Serves one connection: keep-alive, content-length and chunked request bodies.
fn serve(conn: TcpStream, st: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        let Some((method, path, headers)) = read_head(&mut r) else {
            return;
        };
        st.requests.fetch_add(1, Ordering::SeqCst);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length: u64 = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let close = get("connection").is_some_and(|v| v.contains("close"));
        let body = if chunked {
            read_chunked(&mut r, st)
        } else {
            read_exact_counted(&mut r, length, st)
        };
        let Some(body_bytes) = body else { return };
        let echo = json!({
            "method": method,
            "path": path,
            "headers": headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "body_bytes": body_bytes,
        });
        *st.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(echo.clone());
        match st.mode {
            Mode::Echo => {}
            Mode::Delay(d) => std::thread::sleep(d),
            Mode::Hang => {
                while !st.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        }
        let body = echo.to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream: echo\r\ncontent-length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            body
        );
        if out.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

type Head = (String, String, Vec<(String, String)>);

fn read_head(r: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some((method, path, headers))
}

fn read_exact_counted(r: &mut BufReader<TcpStream>, mut n: u64, st: &State) -> Option<u64> {
    let total = n;
    let mut buf = [0u8; 16 * 1024];
    while n > 0 {
        let want = usize::try_from(n.min(buf.len() as u64)).ok()?;
        let got = r.read(&mut buf[..want]).ok()?;
        if got == 0 {
            return None;
        }
        n -= got as u64;
        st.body_bytes.fetch_add(got as u64, Ordering::SeqCst);
    }
    Some(total)
}

fn read_chunked(r: &mut BufReader<TcpStream>, st: &State) -> Option<u64> {
    let mut total = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = u64::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                    return Some(total);
                }
            }
        }
        total += read_exact_counted(r, size, st)?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).ok()?;
    }
}
