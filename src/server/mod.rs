//! The listeners. Each one only translates between its protocol and
//! [`crate::authz::Authorizer::check`]; none makes a decision of its own. One HTTP
//! stack on one multi-thread tokio runtime (the process's):
//!
//! - `authz_http` (hyper): Envoy HTTP ext_authz and forward-auth, every method and path;
//! - `authz_grpc` (tonic, on hyper): `envoy.service.auth.v3.Authorization/Check`;
//! - `proxy` (hyper, with reqwest as the client): the reverse proxy to `upstream.url`;
//! - `admin` (axum on hyper): `/metrics`, `/healthz`, `/readyz`, `/keys`, `POST /refresh`.
//!
//! Limits. HTTP/1.1 listeners ([`serve_http1`]): a request head over
//! [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] fields gets `431`; a head not complete within
//! [`HEADER_READ_TIMEOUT`] of the connection's start or of the last answer (hyper's
//! `header_read_timeout`, re-armed for every head) gets `408` and the connection
//! closes; at most [`MAX_CONNECTIONS`] connections per listener; bodies are streamed,
//! never buffered whole. hyper refuses malformed framing (`Transfer-Encoding` whose last
//! coding is not `chunked`, conflicting `Content-Length`) with `400`; the listeners add
//! the `Host` rule ([`crate::request::check_host`]). gRPC: messages up to
//! [`authz_grpc::MAX_MESSAGE_BYTES`], header lists up to [`GRPC_MAX_HEADER_LIST_BYTES`],
//! [`GRPC_MAX_CONNECTIONS`] connections, [`GRPC_MAX_STREAMS_PER_CONNECTION`] concurrent
//! calls per connection, each bounded by [`GRPC_REQUEST_TIMEOUT`], dead peers found by
//! HTTP/2 keepalive pings. On stop, every listener stops accepting at once, and what is
//! in flight gets one [`SHUTDOWN_GRACE`] in total to finish.

pub mod admin;
pub mod authz_grpc;
pub mod authz_http;
pub mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, watch};

use crate::app::App;
use crate::decision::Denial;

/// Time a client has to send a complete request head, on a new connection or after
/// the last answer on a kept-alive one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and header fields), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 100;
/// Length of a listener's accept queue.
pub const BACKLOG: u32 = 1024;
/// Most concurrent connections per HTTP/1.1 listener; further clients wait in the
/// kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Time in-flight requests get to finish on SIGTERM, for all listeners together.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Most concurrent gRPC connections; further clients wait in the kernel's accept queue
/// (Envoy multiplexes its checks over a few connections).
pub const GRPC_MAX_CONNECTIONS: usize = 1024;
/// Most concurrent calls on one gRPC connection (HTTP/2 `MAX_CONCURRENT_STREAMS`, and
/// the per-connection concurrency limit behind it).
pub const GRPC_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest time one `Check` may take: enough for an unknown-kid JWKS refetch at its
/// default 5 s timeout; Envoy's own ext_authz timeout is normally much shorter.
pub const GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/2 header list of a gRPC call (the checked request's headers travel in
/// the message, not here).
pub const GRPC_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Interval of HTTP/2 keepalive pings on gRPC connections, and how long an answer may take.
pub const GRPC_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// The answer to a head that did not arrive in time (hyper closes the connection
/// without one).
const REQUEST_TIMEOUT_ANSWER: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The error of a listener's bind, naming it.
pub fn bind_error(listener: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    format!("listeners.{listener}: cannot listen on {addr}: {e}")
}

/// Running listeners; stop them with [`Listeners::stop`].
pub struct Listeners {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Tells every listener to stop accepting and to close its connections gracefully.
    stop: watch::Sender<bool>,
    /// Graceful-shutdown triggers of the tonic servers.
    shutdowns: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The bound addresses, by listener name (port 0 in the config is resolved here).
    pub addrs: Vec<(String, SocketAddr)>,
}

/// A listening socket on `addr` (`SO_REUSEADDR`, [`BACKLOG`]).
pub fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds and starts every configured listener. A port in use is an error naming the
/// listener.
pub fn start(app: &Arc<App>) -> Result<Listeners, String> {
    let config = app.config();
    let l = &config.listeners;
    let (stop, _) = watch::channel(false);
    let mut out = Listeners {
        tasks: Vec::new(),
        stop,
        shutdowns: Vec::new(),
        addrs: Vec::new(),
    };
    if let Some(addr) = l.authz_http {
        let listener = tcp_listener(addr).map_err(|e| bind_error("authz_http", addr, &e))?;
        let authz = app.authorizer().clone();
        out.add_http1("authz_http", listener, move |_peer| {
            let authz = authz.clone();
            hyper::service::service_fn(move |req| {
                let authz = authz.clone();
                async move { Ok::<_, Infallible>(authz_http::answer(&authz, req).await) }
            })
        })?;
    }
    if let Some(addr) = l.authz_grpc {
        out.add_grpc(app.authorizer().clone(), addr)?;
    }
    if let Some(addr) = l.proxy {
        // The config only enables the proxy together with `upstream`; the upstream is
        // read here, once: like a listener address, changing it needs a restart.
        let Some(upstream) = &config.upstream else {
            return Err("listeners.proxy: the proxy listener needs `upstream`".to_string());
        };
        let proxy = Arc::new(proxy::Proxy::new(app.authorizer().clone(), upstream)?);
        let listener = tcp_listener(addr).map_err(|e| bind_error("proxy", addr, &e))?;
        out.add_http1("proxy", listener, move |peer| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            })
        })?;
    }
    // Admin last: once /healthz answers, every other listener is bound.
    if let Some(addr) = l.admin {
        let listener = tcp_listener(addr).map_err(|e| bind_error("admin", addr, &e))?;
        let router = admin::router(app.clone());
        out.add_http1("admin", listener, move |_peer| {
            hyper_util::service::TowerToHyperService::new(router.clone())
        })?;
    }
    Ok(out)
}

/// Serves HTTP/1.1 connections accepted on `listener` with the services `make` builds
/// (one per connection, given the peer's address), under the listener limits, until
/// `stop` turns true; then closes idle connections at once and lets each request in
/// flight finish. Returns when every connection has ended.
pub async fn serve_http1<F, S, B>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    make: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(SocketAddr) -> S + Send + 'static,
    S: Http1Service<B>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (mut stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        // Answers are small and whole: send them at once.
        let _ = stream.set_nodelay(true);
        let service = make(peer);
        let builder = builder.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection(TokioIo::new(&mut stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            match result {
                Err(e) if e.is_timeout() => {
                    // Best effort: the client may be gone already.
                    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, async {
                        let _ = stream.write_all(REQUEST_TIMEOUT_ANSWER).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                }
                Err(e) => tracing::debug!(listener = name, error = %e, "connection ended"),
                Ok(()) => {}
            }
        });
    }
    // Stopped: no new connections; wait for every open one to end.
    drop(listener);
    let _ = permits.acquire_many(MAX_CONNECTIONS as u32).await;
}

/// A service one HTTP/1.1 connection can run on its own task.
pub trait Http1Service<B>:
    hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<B>,
        Future: Send + 'static,
        Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    > + Send
    + 'static
{
}

impl<S, B> Http1Service<B> for S where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + 'static
{
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A denial as an HTTP answer: the decision's status, headers and JSON body.
pub fn denial_response(d: &Denial) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(d.json_body())));
    *resp.status_mut() = http::StatusCode::from_u16(d.reason.http_status())
        .unwrap_or(http::StatusCode::UNAUTHORIZED);
    let headers = resp.headers_mut();
    for (name, value) in d.headers() {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    resp
}

/// A gRPC connection that holds one of the [`GRPC_MAX_CONNECTIONS`] permits while open.
struct LimitedConn {
    io: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Accepts gRPC connections while a permit is free, and hands them to tonic. Stops
/// (closing the socket) when tonic drops the stream on shutdown.
fn grpc_incoming(
    listener: tokio::net::TcpListener,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<LimitedConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(GRPC_MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((io, _)) => {
                    // Checks are small request/response pairs: send them at once.
                    let _ = io.set_nodelay(true);
                    let conn = LimitedConn {
                        io,
                        _permit: permit,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(listener = "authz_grpc", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

// === impl Listeners ===

impl Listeners {
    /// Serves `listener` with the services `make` builds ([`serve_http1`]) on its own
    /// task until [`Listeners::stop`].
    fn add_http1<F, S, B>(
        &mut self,
        name: &'static str,
        listener: tokio::net::TcpListener,
        make: F,
    ) -> Result<(), String>
    where
        F: Fn(SocketAddr) -> S + Send + 'static,
        S: Http1Service<B>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let local = listener
            .local_addr()
            .map_err(|e| format!("listeners.{name}: {e}"))?;
        let stop = self.stop.subscribe();
        self.tasks
            .push(tokio::spawn(serve_http1(name, listener, make, stop)));
        self.addrs.push((name.to_string(), local));
        tracing::info!(listener = name, addr = %local, "listening");
        Ok(())
    }

    /// Binds `authz_grpc` and serves it on its own task until [`Listeners::stop`].
    fn add_grpc(
        &mut self,
        authz: Arc<crate::authz::Authorizer>,
        addr: SocketAddr,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| bind_error("authz_grpc", addr, &e);
        // Bound here, synchronously, so that a port in use fails startup like the others.
        let listener = tcp_listener(addr).map_err(err)?;
        let local = listener.local_addr().map_err(err)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(GRPC_MAX_STREAMS_PER_CONNECTION as usize)
            .max_concurrent_streams(GRPC_MAX_STREAMS_PER_CONNECTION)
            .timeout(GRPC_REQUEST_TIMEOUT)
            .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(GRPC_KEEPALIVE.0))
            .http2_keepalive_timeout(Some(GRPC_KEEPALIVE.1))
            .add_service(authz_grpc::AuthzService::new(authz).into_server());
        let incoming = grpc_incoming(listener);
        self.tasks.push(tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(incoming, async {
                    // A dropped sender (Listeners dropped) also stops the server.
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(listener = "authz_grpc", error = %e, "server failed");
            }
        }));
        self.shutdowns.push(stop);
        self.addrs.push(("authz_grpc".to_string(), local));
        tracing::info!(listener = "authz_grpc", addr = %local, "listening");
        Ok(())
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops accepting on every listener at once and lets in-flight requests finish,
    /// within one [`SHUTDOWN_GRACE`] for all listeners together.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for stop in self.shutdowns {
            let _ = stop.send(());
        }
        // tonic waits for its clients to close after GOAWAY, and an HTTP client may hold
        // a request open: neither may hold the process past the grace period.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for t in self.tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

// === impl LimitedConn ===

impl tokio::io::AsyncRead for LimitedConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for LimitedConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
