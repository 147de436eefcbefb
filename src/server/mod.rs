//! The listeners. Each one only translates between its protocol and
//! [`crate::authz::Authorizer::check`]; none makes a decision of its own.

pub mod admin;
pub mod authz_http;

use actix_web::http::header::HeaderMap;

use crate::token::extract::Headers;

/// Time a client has to send a complete request head.
pub const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most concurrent connections per worker.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;
/// Time in-flight requests get to finish on SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

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
    /// The bound addresses, by listener name (port 0 in the config is resolved here).
    pub addrs: Vec<(String, std::net::SocketAddr)>,
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
        addrs: Vec::new(),
    };
    if let Some(addr) = l.authz_http {
        let authz = web::Data::new(app.authorizer().clone());
        let server = HttpServer::new(move || {
            ActixApp::new()
                .app_data(authz.clone())
                .default_service(web::to(authz_http::check))
        });
        out.add("authz_http", bind!(server, "authz_http", addr, workers))?;
    }
    if let Some(addr) = l.admin {
        let data = web::Data::new(app.clone());
        let server = HttpServer::new(move || {
            ActixApp::new()
                .app_data(data.clone())
                .configure(admin::routes)
        });
        out.add("admin", bind!(server, "admin", addr, 1))?;
    }
    if let Some(addr) = l.authz_grpc {
        tracing::warn!(%addr, "listeners.authz_grpc is not served by this build yet; set it to null to silence this");
    }
    if let Some(addr) = l.proxy {
        tracing::warn!(%addr, "listeners.proxy is not served by this build yet; set it to null to silence this");
    }
    Ok(out)
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

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops accepting, lets in-flight requests finish (up to [`SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        for (_, h) in &self.handles {
            h.stop(true).await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
