//! Test support: the built `tokengate` binary on loopback ports, a real HTTP JWKS server
//! the test can change while it runs, a raw HTTP/1.1 client (so tests control every
//! header byte), fixtures made by an independent JOSE implementation, token minting for
//! tokens the fixtures do not cover, and a metrics matcher.

#![allow(dead_code)]

pub mod envoy;
pub mod http;
pub mod jwks_server;
pub mod mint;
pub mod upstream;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
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
        let text = std::fs::read_to_string(fixtures().join("tokens.json"))
            .unwrap_or_else(|e| panic!("tokens.json: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("tokens.json: {e}"))
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

/// A free loopback port (bound, then released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
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
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn tokengate: {e}"));
    if let Some(input) = stdin {
        use std::io::Write as _;
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(input.as_bytes());
        }
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait tokengate: {e}"));
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
    /// The config file.
    pub config: PathBuf,
    /// Where stderr (the logs) goes.
    pub log: PathBuf,
}

impl Tokengate {
    /// Writes `config` (listeners filled in with free ports unless present) into `dir`
    /// and starts `tokengate serve` on it; waits until `/healthz` answers.
    pub fn start(dir: &TempDir, mut config: Value) -> Tokengate {
        let authz = free_addr();
        let admin = free_addr();
        let listeners = config
            .as_object_mut()
            .unwrap_or_else(|| panic!("config must be an object"))
            .entry("listeners")
            .or_insert_with(|| serde_json::json!({}));
        let l = listeners
            .as_object_mut()
            .unwrap_or_else(|| panic!("listeners must be an object"));
        l.entry("authz_http")
            .or_insert(Value::String(authz.to_string()));
        l.entry("admin").or_insert(Value::String(admin.to_string()));
        l.entry("authz_grpc").or_insert(Value::Null);
        let authz: SocketAddr = l["authz_http"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap_or(authz);
        let admin: SocketAddr = l["admin"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap_or(admin);
        let path = dir.write("config.json", config.to_string());
        Self::spawn(path, authz, admin, &[])
    }

    /// Starts `tokengate serve --config path` with extra arguments.
    pub fn spawn(
        config: PathBuf,
        authz: SocketAddr,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Tokengate {
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let mut args: Vec<&str> = vec!["--log-level", "debug", "serve", "--config"];
        let cfg = config.to_string_lossy().into_owned();
        args.push(&cfg);
        args.extend_from_slice(extra);
        let child = Command::new(bin())
            .args(&args)
            .env_remove("TOKENGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn tokengate: {e}"));
        let tg = Tokengate {
            child,
            authz,
            admin,
            config,
            log,
        };
        tg.wait_for(
            || http::get(tg.admin, "/healthz").is_some_and(|r| r.status == 200),
            "healthz",
        );
        tg
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
        let r = http::get(self.admin, "/metrics").unwrap_or_else(|| panic!("no /metrics"));
        Metrics::parse(&r.body_text())
    }

    /// The `/keys` document.
    pub fn keys(&self) -> Value {
        let r = http::get(self.admin, "/keys").unwrap_or_else(|| panic!("no /keys"));
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("/keys: {e}"))
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
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
