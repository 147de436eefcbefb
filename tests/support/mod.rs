//! Test support: the built `tokengate` binary on loopback ports, a real HTTP JWKS server
//! the test can change while it runs, a raw HTTP/1.1 client (so tests control every
//! header byte), fixtures made by an independent JOSE implementation, token minting for
//! tokens the fixtures do not cover, and a metrics matcher.

#![allow(dead_code)]

pub mod dpop;
pub mod envoy;
pub mod http;
pub mod jwks_server;
pub mod keystore;
pub mod mint;
pub mod mtls;
pub mod otlp;
pub mod upstream;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A named token from `tests/fixtures/tokens.json` (signed by jwcrypto).
pub fn token(name: &str) -> String {
    static TOKENS: OnceLock<HashMap<String, String>> = OnceLock::new();
    let map = TOKENS.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("tokens.json")).expect("tokens.json");
        serde_json::from_str(&text).expect("tokens.json")
    });
    map.get(name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
        .clone()
}

/// A fresh directory under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file inside it (atomically: write + rename).
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
        std::fs::rename(&tmp, &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback address where connections are refused for as long as this lives: a TCP
/// socket bound to a port chosen by the kernel and never listening, so no other process
/// can take the port meanwhile (unlike a port bound, then released).
pub struct ClosedPort {
    /// The address.
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    /// Binds it.
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local_addr");
        ClosedPort {
            addr,
            _socket: socket,
        }
    }
}

/// What a listener field of a test config says: bind loopback, port chosen by the kernel
/// (the test reads the chosen address back from the log, [`Tokengate::addr`]).
pub const ANY_PORT: &str = "127.0.0.1:0";

/// The `listening` lines of a tokengate log: (listener, address), in order.
pub fn listening(log: &str) -> Vec<(String, SocketAddr)> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains(" listening "))
        .filter_map(|line| {
            let field = |name: &str| {
                let start = line.find(&format!(" {name}="))? + name.len() + 2;
                let value = line[start..].split_whitespace().next()?;
                Some(value.trim_matches('"').to_string())
            };
            Some((field("listener")?, field("addr")?.parse().ok()?))
        })
        .collect()
}

/// `line` without ANSI colour escapes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The tokengate binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tokengate")
}

/// Runs `tokengate ARGS` to completion, returning (exit code, stdout, stderr).
pub fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("TOKENGATE_CONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tokengate");
    if let Some(input) = stdin {
        use std::io::Write as _;
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(input.as_bytes());
        }
    }
    let out = child.wait_with_output().expect("wait tokengate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `tokengate serve`.
pub struct Tokengate {
    /// The child process.
    pub child: Child,
    /// authz_http address.
    pub authz: SocketAddr,
    /// admin address.
    pub admin: SocketAddr,
    /// Every listener's bound address, as logged.
    pub addrs: HashMap<String, SocketAddr>,
    /// The config file.
    pub config: PathBuf,
    /// Where stderr (the logs) goes.
    pub log: PathBuf,
    /// Where stdout (the decision log) goes.
    pub out: PathBuf,
}

impl Tokengate {
    /// Writes `config` (`authz_http` and `admin` on [`ANY_PORT`] unless present,
    /// `authz_grpc` off unless present) into `dir` and starts `tokengate serve` on it;
    /// waits until `/healthz` answers.
    pub fn start(dir: &TempDir, config: Value) -> Tokengate {
        Self::start_env(dir, config, &[])
    }

    /// [`Tokengate::start`] with these environment variables set.
    pub fn start_env(dir: &TempDir, mut config: Value, env: &[(&str, &str)]) -> Tokengate {
        let listeners = config
            .as_object_mut()
            .expect("config must be an object")
            .entry("listeners")
            .or_insert_with(|| serde_json::json!({}));
        let l = listeners
            .as_object_mut()
            .expect("listeners must be an object");
        l.entry("authz_http").or_insert(ANY_PORT.into());
        l.entry("admin").or_insert(ANY_PORT.into());
        l.entry("authz_grpc").or_insert(Value::Null);
        let path = dir.write("config.json", config.to_string());
        Self::spawn_env(path, &[], env)
    }

    /// Starts `tokengate serve --config path` with extra arguments; reads every
    /// listener's address from the log and waits until `/healthz` answers.
    pub fn spawn(config: PathBuf, extra: &[&str]) -> Tokengate {
        Self::spawn_env(config, extra, &[])
    }

    /// [`Tokengate::spawn`] with these environment variables set.
    pub fn spawn_env(config: PathBuf, extra: &[&str], env: &[(&str, &str)]) -> Tokengate {
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let out = config.with_extension("out");
        let out_file = std::fs::File::create(&out).expect("stdout file");
        let mut args: Vec<&str> = vec!["--log-level", "debug", "serve", "--config"];
        let cfg = config.to_string_lossy().into_owned();
        args.push(&cfg);
        args.extend_from_slice(extra);
        let child = Command::new(bin())
            .args(&args)
            .env_remove("TOKENGATE_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(log_file)
            .spawn()
            .expect("spawn tokengate");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut tg = Tokengate {
            child,
            authz: unbound,
            admin: unbound,
            addrs: HashMap::new(),
            config,
            log,
            out,
        };
        let wanted = configured_listeners(&tg.config);
        tg.wait_for(
            || {
                let bound = listening(&tg.logs());
                wanted.iter().all(|w| bound.iter().any(|(n, _)| n == w))
            },
            &format!("listening lines for {wanted:?}"),
        );
        tg.addrs = listening(&tg.logs()).into_iter().collect();
        tg.authz = tg.addrs.get("authz_http").copied().unwrap_or(unbound);
        tg.admin = tg.addrs.get("admin").copied().unwrap_or(unbound);
        tg.wait_for(
            || http::get(tg.admin, "/healthz").is_some_and(|r| r.status == 200),
            "healthz",
        );
        tg
    }

    /// The bound address of listener `name` (`proxy`, `authz_grpc`, ...).
    pub fn addr(&self, name: &str) -> SocketAddr {
        match self.addrs.get(name) {
            Some(a) => *a,
            None => panic!("no {name} listener; log:\n{}", self.logs()),
        }
    }

    /// Waits up to 10 s for `cond`, panicking with the log if it never holds.
    pub fn wait_for(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.logs());
    }

    /// Waits until `/readyz` is 200.
    pub fn wait_ready(&self) {
        self.wait_for(
            || http::get(self.admin, "/readyz").is_some_and(|r| r.status == 200),
            "readyz",
        );
    }

    /// A check on authz_http with these headers.
    pub fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
        http::request(self.authz, method, path, headers, b"")
            .unwrap_or_else(|| panic!("authz_http did not answer; log:\n{}", self.logs()))
    }

    /// A check with `Authorization: Bearer <token>`.
    pub fn check_token(&self, path: &str, token: &str) -> http::Response {
        let auth = format!("Bearer {token}");
        self.check("GET", path, &[("authorization", &auth)])
    }

    /// The scraped `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let r = http::get(self.admin, "/metrics").expect("no /metrics");
        Metrics::parse(&r.body_text())
    }

    /// The `/keys` document.
    pub fn keys(&self) -> Value {
        let r = http::get(self.admin, "/keys").expect("no /keys");
        serde_json::from_slice(&r.body).expect("/keys")
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The decision-log lines written so far, each parsed as JSON (a line that is not
    /// JSON fails the test).
    pub fn audit_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a decision-log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until at least `n` decision-log lines were written, and returns them.
    pub fn wait_audit_lines(&self, n: usize) -> Vec<Value> {
        self.wait_for(|| self.stdout().lines().count() >= n, "decision-log lines");
        self.audit_lines()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit (up to 20 s) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The listeners a JSON config file turns on: `authz_http`, `authz_grpc` and `admin`
/// unless `null` (they have defaults), `proxy` when set (or absent beside `upstream`).
fn configured_listeners(config: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let l = &value["listeners"];
    let mut names: Vec<String> = ["authz_http", "authz_grpc", "admin"]
        .into_iter()
        .filter(|n| !l.get(*n).is_some_and(Value::is_null))
        .map(str::to_string)
        .collect();
    if l["proxy"].is_string() || (l.get("proxy").is_none() && value.get("upstream").is_some()) {
        names.push("proxy".to_string());
    }
    names
}

impl Drop for Tokengate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scraped Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// (name, labels, value) per sample.
    pub samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Metrics {
    /// Parses the text format (no escapes beyond `\"` in label values are expected).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), HashMap::new()),
                Some((n, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let mut labels = HashMap::new();
                    for pair in split_labels(rest) {
                        if let Some((k, v)) = pair.split_once('=') {
                            labels.insert(k.to_string(), v.trim_matches('"').replace("\\\"", "\""));
                        }
                    }
                    (n.to_string(), labels)
                }
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    /// The value of the one sample of `name` whose labels include `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name && want.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Sum over samples of `name` whose labels include `want` (0 when none).
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name && want.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.samples.len()
    }
}

fn split_labels(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut prev = '\0';
    for c in s.chars() {
        if c == '"' && prev != '\\' {
            in_quotes = !in_quotes;
        }
        if c == ',' && !in_quotes {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        prev = c;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The standard test issuer config over the fixture JWKS file.
pub fn fixture_issuer() -> Value {
    serde_json::json!({
        "name": "main",
        "issuer": "https://issuer.example",
        "audiences": ["orders-api"],
        "algorithms": ["RS256","RS384","RS512","PS256","PS384","PS512","ES256","ES384","EdDSA","HS256","HS384","HS512"],
        "require_typ": ["at+jwt", "application/at+jwt"],
        "key_sources": [
            { "jwks_file": fixtures().join("jwks.json").to_string_lossy() },
            { "pem_file": fixtures().join("pem-rsa.cert.pem").to_string_lossy(), "kid": "pem-1" }
        ]
    })
}

/// The fixture public JWK `name` (`rsa-1`, `rsa-2`, `ec-p256`, ...) published as `kid`.
pub fn public_jwk(name: &str, kid: &str) -> Value {
    static SET: OnceLock<Value> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let path = fixtures().join("jwks-public.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    });
    let mut key = set["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no fixture key {name}"));
    key["kid"] = serde_json::json!(kid);
    key
}
