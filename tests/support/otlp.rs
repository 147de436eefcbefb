//! A real OTLP trace receiver on loopback, built from the `opentelemetry-proto`
//! definitions: the gRPC `TraceService` (tonic) or OTLP/HTTP with protobuf bodies
//! (`POST /v1/traces`, hyper). It keeps every span it is sent, with its resource's
//! `service.name`, and serves until dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

/// One span as received.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex (empty for a root span).
    pub parent_span_id: String,
    /// `SpanKind` (2 = server, 3 = client).
    pub kind: i32,
    /// Attributes, as text.
    pub attributes: HashMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's attributes, as text.
    pub resource: HashMap<String, String>,
}

/// The running receiver.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<Span>>>);

impl Receiver {
    /// An OTLP/gRPC receiver (`TraceService/Export`).
    pub fn grpc() -> Receiver {
        Self::start(|listener, store| {
            Box::pin(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(store))
                    .serve_with_incoming(incoming)
                    .await;
            })
        })
    }

    /// An OTLP/HTTP receiver (`POST /v1/traces`, `application/x-protobuf`).
    pub fn http() -> Receiver {
        Self::start(|listener, store| {
            Box::pin(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let store = store.clone();
                            async move { Ok::<_, std::convert::Infallible>(store.http(req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })
    }

    fn start(
        serve: impl FnOnce(
            tokio::net::TcpListener,
            Store,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let store = Store::default();
        let spans = store.0.clone();
        runtime.spawn(serve(listener, store));
        Receiver {
            addr,
            spans,
            _runtime: runtime,
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits up to 20 s until `n` spans named `name` arrived; returns them.
    pub fn wait_for(&self, name: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.name == name)
                .collect();
            if got.len() >= n || Instant::now() > deadline {
                assert!(
                    got.len() >= n,
                    "{} of {n} {name} spans arrived; all spans: {:#?}",
                    got.len(),
                    self.spans()
                );
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Store {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut out = Vec::new();
        for rs in request.resource_spans {
            let resource: HashMap<String, String> = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?))))
                .collect();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        kind: s.kind,
                        attributes: s
                            .attributes
                            .iter()
                            .filter_map(|kv| {
                                Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)))
                            })
                            .collect(),
                        service: service.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(out);
        }
    }

    async fn http(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<hyper::body::Bytes>> {
        let respond = |status: u16, body: Vec<u8>| {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .expect("a response")
        };
        if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
            return respond(404, Vec::new());
        }
        let Ok(body) = req.into_body().collect().await else {
            return respond(400, Vec::new());
        };
        match ExportTraceServiceRequest::decode(body.to_bytes()) {
            Ok(request) => {
                self.keep(request);
                respond(
                    200,
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                )
            }
            Err(_) => respond(400, Vec::new()),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(v: &AnyValue) -> String {
    match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
