//! DPoP proofs (RFC 9449) made by an independent JOSE implementation: a long-running
//! `tests/support/dpop_mint.py` (jwcrypto, installed by `scripts/install-test-deps.sh`)
//! makes fresh keys and signs proofs on request, one JSON object per line each way, so
//! the Rust code under test never checks a proof it made itself. Each test starts its
//! own [`Minter`]. A missing `python3` or jwcrypto is a test failure that says how to
//! install it, never a skip.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The minting script, `tests/support/dpop_mint.py`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dpop_mint.py")
}

/// A running `python3 tests/support/dpop_mint.py` (its stderr goes to the test's),
/// stopped on drop. Requests and answers are single JSON lines; see the script's
/// docstring for every request.
pub struct Minter {
    /// The child process.
    child: Child,
    /// Its stdin: one request per line.
    stdin: ChildStdin,
    /// Its stdout: one answer per line.
    stdout: BufReader<ChildStdout>,
}

/// A fresh key made by a [`Minter`], remembered there under `id`.
#[derive(Debug, Clone)]
pub struct ProofKey {
    /// The minter's name of the key (`k1`, `k2`, ...), for later requests.
    pub id: String,
    /// Its JWS alg: `ES256`, `ES384`, `EdDSA`, `RS256` or `PS256`.
    pub alg: String,
    /// The public JWK (no `kid`): what a proof's `jwk` header carries by default.
    pub jwk: Value,
    /// The JWK with its private members.
    pub private_jwk: Value,
    /// The RFC 7638 SHA-256 thumbprint of [`ProofKey::jwk`], base64url without padding
    /// (as jwcrypto computes it): the `cnf.jkt` of an access token bound to this key.
    pub jkt: String,
}

impl Minter {
    /// Starts the script and checks that it answers (so that jwcrypto is importable);
    /// panics naming `scripts/install-test-deps.sh` when `python3` or jwcrypto is
    /// missing.
    pub fn start() -> Minter {
        let script = script();
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 {} ({e}): run scripts/install-test-deps.sh",
                    script.display()
                )
            });
        let stdin = child.stdin.take().expect("dpop_mint.py stdin");
        let stdout = BufReader::new(child.stdout.take().expect("dpop_mint.py stdout"));
        let mut minter = Minter {
            child,
            stdin,
            stdout,
        };
        match minter.send(&json!({"op": "hello"})) {
            Some(answer) if matches!(answer["ok"], Value::Bool(true)) => minter,
            Some(answer) => panic!(
                "dpop_mint.py cannot mint DPoP proofs: {answer} \
                 (python3 with jwcrypto is needed: run scripts/install-test-deps.sh)"
            ),
            None => panic!(
                "dpop_mint.py exited without answering (see its stderr above): python3 with \
                 jwcrypto is needed: run scripts/install-test-deps.sh"
            ),
        }
    }

    /// Sends one request and reads its answer; `None` when the script is gone.
    fn send(&mut self, req: &Value) -> Option<Value> {
        let mut line = req.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).ok()?;
        self.stdin.flush().ok()?;
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&answer).unwrap_or_else(|e| {
                panic!("dpop_mint.py answered a line that is not JSON ({e}): {answer}")
            })),
        }
    }

    /// Sends one request and returns its answer; panics when the answer is
    /// `{"error": ...}` or the script is gone.
    pub fn call(&mut self, req: &Value) -> Value {
        let answer = self.send(req).unwrap_or_else(|| {
            panic!("dpop_mint.py exited without answering {req} (see its stderr above)")
        });
        if let Some(error) = answer.get("error") {
            panic!("dpop_mint.py refused {req}: {error}");
        }
        answer
    }

    /// A compact JWE of `plaintext` under `key` (a JWK, or `{"pem": <public key PEM>}`)
    /// with this protected header, made by jwcrypto.
    pub fn seal(&mut self, key: &Value, header: Value, plaintext: &str) -> String {
        let mut req = json!({"op": "seal", "header": header, "plaintext": plaintext});
        match key.get("pem") {
            Some(pem) => req["pem"] = pem.clone(),
            None => req["jwk"] = key.clone(),
        }
        let answer = self.call(&req);
        answer["jwe"].as_str().expect("jwe").to_string()
    }

    /// A fresh key for `alg` (`ES256`, `ES384`, `EdDSA`, `RS256` or `PS256`).
    pub fn key(&mut self, alg: &str) -> ProofKey {
        let answer = self.call(&json!({"op": "key", "alg": alg}));
        let text = |name: &str| {
            answer[name]
                .as_str()
                .unwrap_or_else(|| panic!("dpop_mint.py key answer without {name}: {answer}"))
                .to_string()
        };
        ProofKey {
            id: text("id"),
            alg: text("alg"),
            jwk: answer["jwk"].clone(),
            private_jwk: answer["private_jwk"].clone(),
            jkt: text("jkt"),
        }
    }

    /// A compact DPoP proof of `key` with `claims` as its payload (verbatim): header
    /// `{"typ": "dpop+jwt", "alg": key.alg, "jwk": key.jwk}`, signed by jwcrypto.
    /// `extra` (a JSON object) is merged into the `proof` request: `"header"` (members
    /// set over the header; `null` removes one), `"jwk"` (`"public"`, `"private"`,
    /// `"none"` or another key's id), `"sign_with"` (another key's id),
    /// `"tamper_signature"` (`true` flips one bit of the signature); `json!({})` for a
    /// plain proof.
    pub fn proof(&mut self, key: &ProofKey, claims: &Value, extra: Value) -> String {
        let fields = match extra {
            Value::Object(fields) => fields,
            other => panic!("Minter::proof: extra must be a JSON object, not {other}"),
        };
        let mut req = json!({"op": "proof", "key": key.id, "claims": claims});
        req.as_object_mut()
            .expect("a proof request is an object")
            .extend(fields);
        self.raw(req)
    }

    /// The `proof` of any request: `{"op": "none", "header": .., "claims": ..}` (an
    /// unsigned `alg: none` token) or `{"op": "hs256", "secret": .., "header": ..,
    /// "claims": ..}` (signed by jwcrypto with that HMAC secret, header as given).
    pub fn raw(&mut self, req: Value) -> String {
        let answer = self.call(&req);
        answer["proof"]
            .as_str()
            .unwrap_or_else(|| panic!("dpop_mint.py answer without proof: {answer}"))
            .to_string()
    }
}

impl Drop for Minter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ath` claim for `token`: base64url (no padding) of the SHA-256 of its ASCII bytes.
pub fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// A `jti` never used before: unique across this process's tests and across runs.
pub fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Proof claims for a request `htm` `htu` carrying access token `token`: `iat` now,
/// a fresh `jti` ([`jti`]) and `ath` ([`ath`]).
pub fn claims(htm: &str, htu: &str, token: &str) -> Value {
    json!({
        "htm": htm,
        "htu": htu,
        "iat": super::mint::now(),
        "jti": jti(),
        "ath": ath(token),
    })
}
