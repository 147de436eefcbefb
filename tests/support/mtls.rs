//! Mutual TLS for the certificate-bound token tests (RFC 8705): a test PKI made by the
//! real `openssl` command (an EC P-256 CA, a server certificate for `localhost` and
//! `127.0.0.1`, client certificates `client-a` and `client-b`), the values a token or a
//! proxy derives from a client certificate computed by `openssl` too (never by the code
//! under test), a TLS front for a shipped Envoy bootstrap, and a TLS client: the real
//! `curl`. A missing `openssl` or `curl` is a test failure that says how to install it
//! (`scripts/install-test-deps.sh`), never a skip.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The client certificates [`Pki::make`] issues.
pub const CLIENTS: [&str; 2] = ["client-a", "client-b"];

/// A test PKI in one directory; every file is PEM, every key EC P-256 and unencrypted.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Where its files are.
    pub dir: PathBuf,
    /// The CA certificate (self-signed, `basicConstraints=critical,CA:true`): Envoy's
    /// `validation_context.trusted_ca`, curl's `--cacert`.
    pub ca: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// The server certificate: `DNS:localhost`, `IP:127.0.0.1`, `serverAuth`.
    pub server_cert: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
}

impl Pki {
    /// Makes the CA, the server certificate and the [`CLIENTS`] certificates (each
    /// `subjectAltName=URI:spiffe://tokengate.test/<name>`, `clientAuth`) in `dir`
    /// (created if missing), all signed by the CA, valid for 30 days from now.
    pub fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        openssl(
            dir,
            "req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout ca.key -out ca.pem -days 30 -subj /CN=tokengate-test-ca \
             -addext basicConstraints=critical,CA:true \
             -addext keyUsage=critical,keyCertSign,cRLSign",
            None,
        );
        issue(dir, "server", 2, "serverAuth", "DNS:localhost,IP:127.0.0.1");
        for (serial, name) in (3..).zip(CLIENTS) {
            let san = format!("URI:spiffe://tokengate.test/{name}");
            issue(dir, name, serial, "clientAuth", &san);
        }
        Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// The certificate of client `name` (one of [`CLIENTS`]).
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.client_file(name, "pem")
    }

    /// The private key of client `name` (one of [`CLIENTS`]).
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.client_file(name, "key")
    }

    /// `<dir>/<name>.<ext>`, a file of client `name`.
    fn client_file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(client_file_name(name, ext))
    }

    /// The DER of client `name`'s certificate (`openssl x509 -outform DER`).
    fn client_der(&self, name: &str) -> Vec<u8> {
        let cert = client_file_name(name, "pem");
        openssl(&self.dir, &format!("x509 -in {cert} -outform DER"), None)
    }

    /// The `cnf` member `x5t#S256` of a token bound to client `name` (RFC 8705 §3.1):
    /// the SHA-256 of its certificate's DER (`openssl x509 -outform DER | openssl dgst
    /// -sha256 -binary`), base64url without padding.
    pub fn x5t_s256(&self, name: &str) -> String {
        let der = self.client_der(name);
        let digest = openssl(&self.dir, "dgst -sha256 -binary", Some(&der));
        assert_eq!(digest.len(), 32, "openssl dgst -sha256 -binary: {digest:?}");
        URL_SAFE_NO_PAD.encode(digest)
    }

    /// The `Hash` of an `x-forwarded-client-cert` element for client `name`: the SHA-256
    /// of its certificate's DER in lower-case hex (`openssl dgst -sha256 -r`).
    pub fn xfcc_hash(&self, name: &str) -> String {
        let der = self.client_der(name);
        let out = openssl(&self.dir, "dgst -sha256 -r", Some(&der));
        let text = String::from_utf8_lossy(&out);
        let hash = text.split_whitespace().next().unwrap_or_default();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "openssl dgst -sha256 -r printed {text:?}"
        );
        hash.to_string()
    }

    /// The `Cert` of an `x-forwarded-client-cert` element for client `name`, without its
    /// quotes: the certificate's PEM (as `openssl x509` writes it) URL-encoded the way
    /// Envoy does it, only `\n`, space, `+`, `/` and `=` percent-encoded (seen on a real
    /// Envoy 1.40 with `SANITIZE_SET` and `set_current_client_cert_details.cert`).
    pub fn xfcc_cert(&self, name: &str) -> String {
        let cert = client_file_name(name, "pem");
        let pem = openssl(&self.dir, &format!("x509 -in {cert}"), None);
        let pem = String::from_utf8(pem).expect("openssl x509 printed PEM");
        let mut out = String::with_capacity(pem.len() + 128);
        for c in pem.chars() {
            match c {
                '\n' => out.push_str("%0A"),
                ' ' => out.push_str("%20"),
                '+' => out.push_str("%2B"),
                '/' => out.push_str("%2F"),
                '=' => out.push_str("%3D"),
                c => out.push(c),
            }
        }
        out
    }

    /// The one `x-forwarded-client-cert` element Envoy sets for client `name` with the
    /// shipped `forward_client_cert_details: SANITIZE_SET` and
    /// `set_current_client_cert_details: { cert: true }` (no `By`: the server
    /// certificate has no URI SAN): `Hash=<hex>;Cert="<URL-encoded PEM>"`.
    pub fn xfcc_element(&self, name: &str) -> String {
        format!(
            "Hash={};Cert=\"{}\"",
            self.xfcc_hash(name),
            self.xfcc_cert(name)
        )
    }
}

/// `<name>.<ext>`, a file of client `name` (one of [`CLIENTS`]) in the PKI's directory.
fn client_file_name(name: &str, ext: &str) -> String {
    assert!(
        CLIENTS.contains(&name),
        "no client {name:?} in the test PKI: {CLIENTS:?}"
    );
    format!("{name}.{ext}")
}

/// Issues `<name>.pem` and `<name>.key` in `dir`: a fresh EC P-256 key, a CSR with
/// subject `CN=<name>` (`<name>.csr`), signed by `ca.pem` with serial `serial`, the
/// extended key usage `eku` and the subject alternative names `san` (`<name>.ext`).
fn issue(dir: &Path, name: &str, serial: u32, eku: &str, san: &str) {
    let ext = dir.join(format!("{name}.ext"));
    let text = format!(
        "basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage={eku}\nsubjectAltName={san}\n"
    );
    std::fs::write(&ext, text).unwrap_or_else(|e| panic!("{}: {e}", ext.display()));
    openssl(
        dir,
        &format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ),
        None,
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} \
             -days 30 -extfile {name}.ext -out {name}.pem"
        ),
        None,
    );
}

/// Runs `openssl ARGS` (split at whitespace: no argument here has a space) in `dir`, with
/// `input` on its standard input (none: `/dev/null`), and returns its standard output; a
/// missing openssl or a failure fails the test with what it printed. (Like
/// `keystore::sh`, which wants a [`super::TempDir`] and returns text; this one takes any
/// directory and returns bytes: DER, digests.)
fn openssl(dir: &Path, args: &str, input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run openssl (scripts/install-test-deps.sh): {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("openssl stdin");
        stdin.write_all(bytes).expect("write to openssl");
    }
    let out = child.wait_with_output().expect("wait for openssl");
    assert!(
        out.status.success(),
        "`openssl {args}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Puts a `DownstreamTlsContext` on the one listener of a rendered shipped Envoy
/// bootstrap (as `support::envoy::render_envoy` or an `Envoy::start_with` patch hands
/// it), the way the bootstraps' headers show: `pki`'s server certificate and key, its CA
/// as `validation_context.trusted_ca`, and `require_client_certificate` as given (false:
/// a client without a certificate still gets its request through to the check).
pub fn tls_front(doc: &mut Value, pki: &Pki, require_client_cert: bool) {
    let chain = doc
        .pointer_mut("/static_resources/listeners/0/filter_chains/0")
        .and_then(Value::as_object_mut)
        .expect("the bootstrap has no listener filter chain");
    assert!(
        !chain.contains_key("transport_socket"),
        "the shipped listener already has a transport socket: {chain:?}"
    );
    chain.insert(
        "transport_socket".into(),
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": require_client_cert,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": pki.server_cert},
                        "private_key": {"filename": pki.server_key}
                    }],
                    "validation_context": {"trusted_ca": {"filename": pki.ca}}
                }
            }
        }),
    );
}

/// One HTTPS request to `https://localhost:<port><path>` (resolved to 127.0.0.1) with the
/// real `curl`: HTTP/1.1, `pki`'s CA trusted, client `client`'s certificate and key
/// presented when given, `headers` added as they are (no proxy from the environment).
/// Returns the status, the headers (lower-case names, in order) and the body. A missing
/// curl or a failed exchange (a refused handshake, say) fails the test with curl's
/// error. Not for `HEAD` (curl would wait for the body).
pub fn tls_request(
    port: u16,
    pki: &Pki,
    client: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--http1.1", "--max-time", "30"])
        .args(["--noproxy", "*", "--dump-header", "-", "--request", method])
        .arg("--cacert")
        .arg(&pki.ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"));
    if let Some(name) = client {
        cmd.arg("--cert")
            .arg(pki.client_cert(name))
            .arg("--key")
            .arg(pki.client_key(name));
    }
    for (name, value) in headers {
        cmd.arg("--header").arg(format!("{name}: {value}"));
    }
    let url = format!("https://localhost:{port}{path}");
    let out = cmd
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (scripts/install-test-deps.sh): {e}"));
    assert!(
        out.status.success(),
        "curl {method} {url} as {client:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl printed no response head: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}
