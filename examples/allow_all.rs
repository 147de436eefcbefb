//! `allow_all`: a do-nothing external authorization service, the baseline of the load
//! benchmark (`bench/run.sh`). It allows every request without looking at it:
//!
//! - HTTP (Envoy HTTP ext_authz, forward-auth): any method and path → `200`, empty body;
//! - gRPC (`envoy.service.auth.v3.Authorization/Check`): status OK with an empty
//!   `OkHttpResponse`.
//!
//! Envoy + ext_authz → `allow_all` costs the hop alone; the same Envoy → tokengate costs
//! the hop plus tokengate's decision, so their ratio is what tokengate adds. To keep
//! that ratio about the decision and not about the framework, this service is served
//! the way tokengate serves its listeners (`src/server/mod.rs`): the same hyper HTTP/1.1
//! connections through `server::serve_http1`, on a multi-thread tokio runtime that also
//! runs tonic, with the same connection limits, timeouts and HTTP/2 settings.
//!
//! With `ALLOW_ALL_SHAPED=1` in its environment, its answers carry what tokengate's carry
//! for the benchmark's tokens (the two forward headers; over gRPC also a 7-claim
//! `dynamic_metadata` Struct, unless `ALLOW_ALL_NO_META=1`): Envoy's cost of the answer's
//! content, without tokengate's cost of producing it.
//!
//! Run: `cargo run --release --example allow_all -- [HTTP_ADDR] [GRPC_ADDR]`
//! (defaults `127.0.0.1:8281` and `127.0.0.1:9291`; `-` turns one off). It runs until
//! killed (SIGTERM, SIGINT).

use std::net::SocketAddr;
use std::process::ExitCode;

use std::convert::Infallible;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse as CheckHttp,
    OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http_body_util::Full;
use hyper::body::Bytes;
use tokengate::server;
use tonic::{Request, Response, Status};

/// Default HTTP address.
const DEFAULT_HTTP: &str = "127.0.0.1:8281";
/// Default gRPC address.
const DEFAULT_GRPC: &str = "127.0.0.1:9291";

/// The gRPC service: every check is allowed.
#[derive(Debug, Clone, Copy)]
struct AllowAll {
    /// Answer with what tokengate answers for the benchmark's tokens.
    shaped: bool,
}

fn main() -> ExitCode {
    let shaped = std::env::var_os("ALLOW_ALL_SHAPED").is_some();
    let mut args = std::env::args().skip(1);
    let (http, grpc) = match (
        addr(args.next(), DEFAULT_HTTP),
        addr(args.next(), DEFAULT_GRPC),
    ) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("allow_all: {e}\nusage: allow_all [HTTP_ADDR|-] [GRPC_ADDR|-]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("allow_all: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(http, grpc, shaped)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allow_all: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `None` → the default; `-` → off; else a socket address.
fn addr(arg: Option<String>, default: &str) -> Result<Option<SocketAddr>, String> {
    let text = arg.as_deref().unwrap_or(default);
    if text == "-" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("{text:?} is not an address: {e}"))
}

/// Serves both listeners until one of them fails.
async fn serve(
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    shaped: bool,
) -> Result<(), String> {
    let mut tasks = Vec::new();
    if let Some(addr) = http {
        // tokengate's HTTP/1.1 listener, limits included (src/server/mod.rs).
        let listener = server::tcp_listener(addr)
            .map_err(|e| format!("http: cannot listen on {addr}: {e}"))?;
        eprintln!("allow_all: http on {addr}");
        // Never stopped: the process runs until killed.
        let (_keep, stop) = tokio::sync::watch::channel(false);
        tasks.push(tokio::spawn(async move {
            let make = move |_| {
                hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(AllowAll { shaped }.answer())
                })
            };
            server::serve_http1("allow_all", listener, make, stop).await;
            drop(_keep);
            Ok(())
        }));
    }
    if let Some(addr) = grpc {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("grpc: cannot listen on {addr}: {e}"))?;
        // tokengate's gRPC listener settings (src/server/mod.rs).
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(server::GRPC_MAX_STREAMS_PER_CONNECTION as usize)
            .max_concurrent_streams(server::GRPC_MAX_STREAMS_PER_CONNECTION)
            .timeout(server::GRPC_REQUEST_TIMEOUT)
            .http2_max_header_list_size(server::GRPC_MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(server::GRPC_KEEPALIVE.0))
            .http2_keepalive_timeout(Some(server::GRPC_KEEPALIVE.1))
            .add_service(AuthorizationServer::new(AllowAll { shaped }));
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        eprintln!("allow_all: grpc on {addr}");
        tasks.push(tokio::spawn(async move {
            router
                .serve_with_incoming(incoming)
                .await
                .map_err(|e| format!("grpc: {e}"))
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

// === impl AllowAll ===

impl AllowAll {
    /// The HTTP answer for every method and path.
    fn answer(self) -> hyper::Response<Full<Bytes>> {
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        if self.shaped {
            // What tokengate's authz_http answers for the benchmark's tokens.
            let h = resp.headers_mut();
            h.insert(
                "x-auth-subject",
                http::HeaderValue::from_static("user-00000042"),
            );
            h.insert(
                "x-auth-scopes",
                http::HeaderValue::from_static("read write"),
            );
        }
        resp
    }
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if !self.shaped {
            return Ok(Response::new(CheckResponse {
                status: Some(rpc::Status {
                    code: 0,
                    message: String::new(),
                    details: Vec::new(),
                }),
                dynamic_metadata: None,
                http_response: Some(CheckHttp::OkResponse(OkHttpResponse::default())),
            }));
        }
        use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HeaderValue, HeaderValueOption};
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let h = |k: &str, v: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        };
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        let n = |v: f64| Value {
            kind: Some(Kind::NumberValue(v)),
        };
        let meta = std::env::var_os("ALLOW_ALL_NO_META")
            .is_none()
            .then(|| Struct {
                fields: [
                    ("iss".to_string(), s("https://bench.example")),
                    ("aud".to_string(), s("bench-api")),
                    ("sub".to_string(), s("user-00000042")),
                    ("scope".to_string(), s("read write")),
                    ("iat".to_string(), n(1_763_000_000.0)),
                    ("exp".to_string(), n(4_102_444_800.0)),
                    ("jti".to_string(), s("0123456789abcdef")),
                ]
                .into_iter()
                .collect(),
            });
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            dynamic_metadata: meta,
            http_response: Some(CheckHttp::OkResponse(OkHttpResponse {
                headers: vec![
                    h("x-auth-subject", "user-00000042"),
                    h("x-auth-scopes", "read write"),
                ],
                ..Default::default()
            })),
        }))
    }
}
