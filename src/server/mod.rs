//! The listeners. Each one only translates between its protocol and
//! [`crate::authz::Authorizer::check`]; none makes a decision of its own.
//!
//! - `authz_http` (`h1` on actix-server): Envoy HTTP ext_authz and forward-auth, every method and path;
//! - `authz_grpc` (tonic): `envoy.service.auth.v3.Authorization/Check`;
//! - `proxy` (actix): the reverse proxy to `upstream.url`, every method and path;
//! - `admin` (actix): `/metrics`, `/healthz`, `/readyz`, `/keys`, `POST /refresh`.
//!
//! Limits. HTTP/1.1 listeners: a request head larger than actix's fixed 128 KiB (or
//! with more than 96 headers) gets `431`; the head must arrive within
//! [`CLIENT_REQUEST_TIMEOUT`]; at most [`MAX_CONNECTIONS_PER_WORKER`] connections per
//! worker; bodies are streamed, never buffered whole. gRPC: messages up to
//! [`authz_grpc::MAX_MESSAGE_BYTES`], header lists up to [`GRPC_MAX_HEADER_LIST_BYTES`],
//! [`GRPC_MAX_CONNECTIONS`] connections, [`GRPC_MAX_STREAMS_PER_CONNECTION`] concurrent
//! calls per connection, each bounded by [`GRPC_REQUEST_TIMEOUT`], dead peers found by
//! HTTP/2 keepalive pings. On stop, every listener stops accepting at once and gets
//! [`SHUTDOWN_GRACE`] to finish what is in flight.

pub mod admin;
pub mod authz_grpc;
pub mod authz_http;
pub mod h1;
pub mod proxy;
pub mod turn;

use actix_web::http::header::HeaderMap;

use crate::token::extract::Headers;

/// Time a client has to send a complete request head.
pub const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Time a client has to close its side after the last answer (actix-web's default).
pub const CLIENT_DISCONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Length of a listener's accept queue (actix-web's default).
pub const BACKLOG: u32 = 1024;
/// Most concurrent connections per worker.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;
/// Time in-flight requests get to finish on SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);
/// Most concurrent gRPC connections; further clients wait in the kernel's accept queue
/// (Envoy multiplexes its checks over a few connections).
pub const GRPC_MAX_CONNECTIONS: usize = 1024;
/// Most concurrent calls on one gRPC connection (HTTP/2 `MAX_CONCURRENT_STREAMS`, and
/// the per-connection concurrency limit behind it).
pub const GRPC_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest time one `Check` may take: enough for an unknown-kid JWKS refetch at its
/// default 5 s timeout; Envoy's own ext_authz timeout is normally much shorter.
pub const GRPC_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest HTTP/2 header list of a gRPC call (the checked request's headers travel in
/// the message, not here).
pub const GRPC_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// Interval of HTTP/2 keepalive pings on gRPC connections, and how long an answer may take.
pub const GRPC_KEEPALIVE: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(30),
    std::time::Duration::from_secs(10),
);

/// actix-web headers as [`Headers`].
#[derive(Debug)]
pub struct ActixHeaders<'a>(pub &'a HeaderMap);

impl Headers for ActixHeaders<'_> {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for v in self.0.get_all(name) {
            f(v.as_bytes());
        }
    }
}

/// Binds a listener, naming it in the error.
pub fn bind_error(listener: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    format!("listeners.{listener}: cannot listen on {addr}: {e}")
}

use std::sync::Arc;

use actix_web::{App as ActixApp, HttpServer, web};

use crate::app::App;

/// Running listeners; stop them with [`Listeners::stop`].
pub struct Listeners {
    handles: Vec<(String, actix_web::dev::ServerHandle)>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Graceful-shutdown triggers of the tonic servers.
    shutdowns: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The bound addresses, by listener name (port 0 in the config is resolved here).
    pub addrs: Vec<(String, std::net::SocketAddr)>,
}

/// A listening socket on `addr`, as actix-web binds one (`SO_REUSEADDR`, [`BACKLOG`]).
fn tcp_listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(BACKLOG).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Applies the listener limits, binds and runs an actix `HttpServer`.
macro_rules! bind {
    ($server:expr, $name:expr, $addr:expr, $workers:expr) => {
        $server
            .workers(usize::max($workers, 1))
            .max_connections(MAX_CONNECTIONS_PER_WORKER)
            .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
            .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
            .disable_signals()
            .bind($addr)
            .map_err(|e| bind_error($name, $addr, &e))
            .map(|s| (s.addrs(), s.run()))
    };
}

/// Binds and starts every configured listener this build serves. A port in use is an
/// error naming the listener.
pub fn start(app: &Arc<App>, workers: usize) -> Result<Listeners, String> {
    let config = app.config();
    let l = &config.listeners;
    let mut out = Listeners {
        handles: Vec::new(),
        tasks: Vec::new(),
        shutdowns: Vec::new(),
        addrs: Vec::new(),
    };
    if let Some(addr) = l.authz_http {
        let bound = authz_http::bind(app.authorizer().clone(), addr, workers)
            .map_err(|e| bind_error("authz_http", addr, &e));
        out.add("authz_http", bound)?;
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
        let state = web::Data::new(proxy::Proxy::new(app.authorizer().clone(), upstream)?);
        let server = HttpServer::new(move || {
            ActixApp::new()
                .app_data(state.clone())
                .default_service(web::to(proxy::handle))
        });
        out.add("proxy", bind!(server, "proxy", addr, workers))?;
    }
    // Admin last: once /healthz answers, every other listener is bound.
    if let Some(addr) = l.admin {
        let data = web::Data::new(app.clone());
        let server = HttpServer::new(move || {
            ActixApp::new()
                .app_data(data.clone())
                .configure(admin::routes)
        });
        out.add("admin", bind!(server, "admin", addr, 1))?;
    }
    Ok(out)
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
    fn add(
        &mut self,
        name: &str,
        bound: Result<(Vec<std::net::SocketAddr>, actix_web::dev::Server), String>,
    ) -> Result<(), String> {
        let (addrs, running) = bound?;
        for a in addrs {
            self.addrs.push((name.to_string(), a));
        }
        self.handles.push((name.to_string(), running.handle()));
        self.tasks.push(tokio::spawn(running));
        tracing::info!(listener = name, addr = ?self.addr(name), "listening");
        Ok(())
    }

    /// Binds `authz_grpc` and serves it on its own task until [`Listeners::stop`].
    fn add_grpc(
        &mut self,
        authz: Arc<crate::authz::Authorizer>,
        addr: std::net::SocketAddr,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| bind_error("authz_grpc", addr, &e);
        // Bound here, synchronously, so that a port in use fails startup like the others.
        let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
        std_listener.set_nonblocking(true).map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
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
            router
                .serve_with_incoming_shutdown(incoming, async {
                    // A dropped sender (Listeners dropped) also stops the server.
                    let _ = stopped.await;
                })
                .await
                .map_err(std::io::Error::other)
        }));
        self.shutdowns.push(stop);
        self.addrs.push(("authz_grpc".to_string(), local));
        tracing::info!(listener = "authz_grpc", addr = %local, "listening");
        Ok(())
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops accepting on every listener at once, lets in-flight requests finish (up to
    /// [`SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        for stop in self.shutdowns {
            let _ = stop.send(());
        }
        // All actix servers drain together, so the grace period is not spent per listener.
        let stopping: Vec<_> = self
            .handles
            .into_iter()
            .map(|(_, h)| tokio::spawn(async move { h.stop(true).await }))
            .collect();
        for s in stopping {
            let _ = s.await;
        }
        // tonic waits for its clients to close after GOAWAY; a client that never does
        // must not hold the process past the grace period.
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
