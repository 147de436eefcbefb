//! `raw_authz`: a measurement, not a listener. It answers `authz_http`-style checks with
//! tokengate's own `Authorizer` over a minimal hand-written HTTP/1.1 loop (tokio sockets,
//! `httparse`, answers formatted by hand) instead of actix-web, so that the load benchmark
//! can say what actix-web costs per check (`BENCHMARKS.md`, "What is left"). It has none
//! of a listener's hardening (no head timeout, no connection limit, no `431`, no
//! graceful shutdown, no forward-auth method/URI overrides): do not serve with it.
//!
//! `COALESCE=1` in its environment writes answers through `server::turn::coalesce`, as
//! `authz_http` does.
//!
//! Run: `cargo run --release --example raw_authz -- CONFIG ADDR` (the config's key
//! sources and cache are used; its listeners are ignored). It runs until killed.

use std::io::ErrorKind;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokengate::app::{App, load_config};
use tokengate::authz::{Authorizer, RequestView};
use tokengate::clock::SystemClock;
use tokengate::decision::Decision;
use tokengate::metrics::{Listener, Metrics};
use tokengate::token::extract::Headers;
use tokio::net::{TcpListener, TcpStream};

/// Most headers a request head may have here.
const MAX_HEADERS: usize = 64;

/// The request's headers as `httparse` found them.
struct Raw<'a>(&'a [httparse::Header<'a>]);

impl Headers for Raw<'_> {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for h in self.0 {
            if h.name.eq_ignore_ascii_case(name) {
                f(h.value);
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, addr] = args.as_slice() else {
        eprintln!("usage: raw_authz CONFIG ADDR");
        return ExitCode::from(2);
    };
    let config = match load_config(Path::new(config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raw_authz: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raw_authz: {e}");
            return ExitCode::FAILURE;
        }
    };
    let coalesce = std::env::var_os("COALESCE").is_some_and(|v| v == "1");
    let result: std::io::Result<()> = rt.block_on(async {
        let app = App::new(
            config,
            tokio::runtime::Handle::current(),
            Arc::new(SystemClock),
            Arc::new(Metrics::new()),
            Arc::new(|_: &str| None),
        );
        let listener = TcpListener::bind(addr.as_str()).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let authz = app.authorizer().clone();
            tokio::spawn(async move {
                let _ = serve(stream, &authz, coalesce).await;
            });
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_authz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One keep-alive connection: parse each complete head, check, answer.
async fn serve(stream: TcpStream, authz: &Authorizer, coalesce: bool) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    loop {
        stream.readable().await?;
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let len = match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return Ok(()),
            };
            let view = RequestView {
                method: req.method.unwrap_or("GET"),
                path: req.path.unwrap_or("/"),
                headers: &Raw(req.headers),
            };
            let verdict = authz.check(Listener::AuthzHttp, &view).await;
            if coalesce {
                tokengate::server::turn::coalesce().await;
            }
            out.clear();
            encode(&verdict.decision, &mut out);
            write_all(&stream, &out).await?;
            buf.drain(..len);
        }
    }
}

/// The answer `authz_http` gives, formatted by hand.
fn encode(decision: &Decision, out: &mut Vec<u8>) {
    match decision {
        Decision::Allow(a) => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n");
            for (name, value) in &a.forward_headers {
                header(out, name, value);
            }
            out.extend_from_slice(b"\r\n");
        }
        Decision::Deny(d) => {
            let body = d.json_body();
            let status = d.reason.http_status();
            out.extend_from_slice(format!("HTTP/1.1 {status} Denied\r\n").as_bytes());
            if let Some(challenge) = d.www_authenticate() {
                header(out, "www-authenticate", &challenge);
            }
            header(out, "cache-control", "no-store");
            header(out, "content-type", "application/json");
            header(out, "content-length", &body.len().to_string());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body.as_bytes());
        }
    }
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
