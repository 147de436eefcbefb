//! The JWE decryptor (SPEC §10, `tokengate::jwe`) on its own: the RFC 7520 §5 examples,
//! tokens jwcrypto and Node's `jose` make for every algorithm × method pair, and hostile JWEs — each
//! altered part, bad CBC padding under a valid tag (indistinguishable from a bad tag), a
//! `dir` key of the wrong size, an `epk` off its curve, refused algorithms and headers.
//! (Decryption keys from key sources, nested tokens and sessions are not wired yet:
//! issue 19 continues.)

use std::process::Command;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokengate::decision::DenyReason;
use tokengate::jwe::{self, DecryptionKey, Enc, KeyAlg, Undecryptable};

use crate::support::fixtures;

fn all_algs() -> Vec<KeyAlg> {
    KeyAlg::ALL.to_vec()
}

fn all_encs() -> Vec<Enc> {
    Enc::ALL.to_vec()
}

/// A private JWK (RSA included: RFC 7520 §5.2's key is a JWK) as a decryption key.
fn key_of(jwk: &Value) -> DecryptionKey {
    DecryptionKey::from_jwk(jwk).expect("a private JWK")
}

fn rsa_key(pem: &str) -> DecryptionKey {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    DecryptionKey::rsa_pkcs8(&pem.contents).expect("an RSA PKCS #8 key")
}

fn decrypt(token: &str, key: &DecryptionKey) -> Result<Vec<u8>, String> {
    let jwe = jwe::parse(token, &all_algs(), &all_encs()).map_err(|r| format!("{r:?}"))?;
    jwe.decrypt(key)
        .map(|p| p.to_vec())
        .map_err(|e| format!("{e:?}"))
}

/// RFC 7520 §5: every example whose algorithm and method tokengate supports decrypts to
/// the published plaintext; `RSA1_5` (§5.1) and the compressed one are refused before
/// any key is touched.
#[test]
fn rfc7520_examples_decrypt_to_the_published_plaintexts() {
    let text = std::fs::read_to_string(fixtures().join("rfc7520-jwe.json")).expect("fixture");
    let doc: Value = serde_json::from_str(&text).expect("fixture JSON");
    let examples = doc["examples"].as_array().expect("examples");
    let mut decrypted = 0;
    for e in examples {
        let section = e["section"].as_str().unwrap_or("?");
        let token = e["compact"].as_str().expect("compact");
        if e["must_refuse"] == true {
            let r = jwe::parse(token, &all_algs(), &all_encs());
            assert!(
                matches!(r, Err(DenyReason::BadAlg | DenyReason::Malformed)),
                "§{section}: {r:?}"
            );
            continue;
        }
        let key = key_of(&e["key"]);
        let plaintext = decrypt(token, &key).unwrap_or_else(|err| panic!("§{section}: {err}"));
        assert_eq!(
            String::from_utf8_lossy(&plaintext),
            e["plaintext"].as_str().expect("plaintext"),
            "§{section}"
        );
        decrypted += 1;
    }
    assert!(decrypted >= 5, "only {decrypted} examples decrypted");
}

/// Which independent implementation makes the tokens.
#[derive(Debug, Clone, Copy)]
enum Maker {
    /// Python's jwcrypto (`tests/support/jwe_mint.py`).
    Jwcrypto,
    /// Node's `jose` (`tests/support/jwe_mint_jose.js`, from `target/test-node`).
    Jose,
}

/// What a [`Maker`] made: fresh keys and a token per pair.
fn minted_by(maker: Maker) -> Value {
    let support = fixtures().join("../support");
    let out = match maker {
        Maker::Jwcrypto => Command::new("python3")
            .arg(support.join("jwe_mint.py"))
            .output(),
        Maker::Jose => Command::new("node")
            .arg(support.join("jwe_mint_jose.js"))
            .env(
                "NODE_PATH",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target/test-node/node_modules"),
            )
            .output(),
    }
    .unwrap_or_else(|e| panic!("{maker:?}: {e} (run scripts/install-test-deps.sh)"));
    assert!(
        out.status.success(),
        "{maker:?}: {} (run scripts/install-test-deps.sh)",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("minted JSON")
}

fn minted() -> Value {
    minted_by(Maker::Jwcrypto)
}

fn minted_key(doc: &Value, name: &str) -> DecryptionKey {
    if name == "rsa" {
        return rsa_key(doc["keys"]["rsa_pkcs8_pem"].as_str().expect("rsa pem"));
    }
    DecryptionKey::from_jwk(&doc["keys"][name]).expect("a minted key")
}

/// Tokens of both independent implementations, jwcrypto and Node's `jose`, for every
/// alg × enc pair decrypt to their plaintexts, and with another key of the same kind
/// they do not.
#[test]
fn tokens_of_two_implementations_decrypt_for_every_algorithm_and_method() {
    for maker in [Maker::Jwcrypto, Maker::Jose] {
        let doc = minted_by(maker);
        let tokens = doc["tokens"].as_array().expect("tokens");
        assert_eq!(
            tokens.len(),
            44,
            "{maker:?}: 8 algorithms x 4 methods, ECDH on two curves"
        );
        let other = minted_by(maker);
        for t in tokens {
            let (alg, enc, name) = (
                t["alg"].as_str().unwrap_or("?"),
                t["enc"].as_str().unwrap_or("?"),
                t["key"].as_str().unwrap_or("?"),
            );
            let token = t["token"].as_str().expect("token");
            let got = decrypt(token, &minted_key(&doc, name))
                .unwrap_or_else(|e| panic!("{maker:?} {alg} {enc} {name}: {e}"));
            assert_eq!(
                String::from_utf8_lossy(&got),
                t["plaintext"].as_str().unwrap_or_default(),
                "{maker:?} {alg} {enc} {name}"
            );
            assert_eq!(
                decrypt(token, &minted_key(&other, name)),
                Err(format!("{Undecryptable:?}")),
                "{maker:?} {alg} {enc} {name} with another key"
            );
        }
    }
}

/// Flips one bit of segment `i` (0 header .. 4 tag) of a compact JWE.
fn flip(token: &str, i: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[i]).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    parts[i] = URL_SAFE_NO_PAD.encode(bytes);
    parts.join(".")
}

/// Every altered part is the same `Undecryptable`; so is bad CBC padding under a tag
/// that is valid (computed here with the MAC key): no padding oracle.
#[test]
fn altered_jwes_and_bad_padding_fail_alike() {
    let doc = minted();
    let tokens = doc["tokens"].as_array().expect("tokens");
    let undecryptable = Err(format!("{Undecryptable:?}"));
    for t in tokens {
        let token = t["token"].as_str().expect("token");
        let key = minted_key(&doc, t["key"].as_str().unwrap_or("?"));
        let what = format!("{} {}", t["alg"], t["enc"]);
        // Header (the AAD; a flipped bit keeps it JSON only sometimes), IV, ciphertext,
        // tag; and the encrypted key where there is one.
        for i in [2, 3, 4] {
            assert_eq!(
                decrypt(&flip(token, i), &key),
                undecryptable,
                "{what} part {i}"
            );
        }
        if !token.split('.').nth(1).unwrap_or_default().is_empty() {
            assert_eq!(decrypt(&flip(token, 1), &key), undecryptable, "{what} key");
        }
        // A truncated tag.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut tag = URL_SAFE_NO_PAD.decode(&parts[4]).expect("tag");
        tag.pop();
        parts[4] = URL_SAFE_NO_PAD.encode(tag);
        assert_eq!(
            decrypt(&parts.join("."), &key),
            undecryptable,
            "{what} short tag"
        );
    }

    // Bad padding under a valid tag: dir + A128CBC-HS256 with a known key.
    let t = tokens
        .iter()
        .find(|t| t["alg"] == "dir" && t["enc"] == "A128CBC-HS256")
        .expect("a dir A128CBC-HS256 token");
    let token = t["token"].as_str().expect("token");
    let cek = URL_SAFE_NO_PAD
        .decode(doc["keys"]["oct32"]["k"].as_str().expect("k"))
        .expect("k");
    let parts: Vec<&str> = token.split('.').collect();
    let iv = URL_SAFE_NO_PAD.decode(parts[2]).expect("iv");
    let mut ct = URL_SAFE_NO_PAD.decode(parts[3]).expect("ct");
    // Changing the second-to-last block garbles the last block's padding on decryption.
    let n = ct.len();
    ct[n - 17] ^= 0x5a;
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &cek[..16]);
    let mut ctx = hmac::Context::with_key(&mac_key);
    ctx.update(parts[0].as_bytes());
    ctx.update(&iv);
    ctx.update(&ct);
    ctx.update(&((parts[0].len() as u64) * 8).to_be_bytes());
    let tag = ctx.sign();
    let forged = format!(
        "{}..{}.{}.{}",
        parts[0],
        parts[2],
        URL_SAFE_NO_PAD.encode(&ct),
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    );
    let key = DecryptionKey::secret(&cek);
    assert_eq!(
        decrypt(&forged, &key),
        undecryptable,
        "bad padding, valid tag"
    );
    assert_eq!(decrypt(&flip(token, 4), &key), undecryptable, "bad tag");
}

/// A `dir` key of the wrong size, an `epk` off the curve (invalid-curve attack) or on
/// another curve, and the refusals that come before any key: `RSA1_5`, `PBES2` with a
/// huge `p2c`, `zip`, `crit`, unknown names, a missing `epk`, a wrong segment count.
#[test]
fn hostile_headers_and_keys_are_refused() {
    let doc = minted();
    let tokens = doc["tokens"].as_array().expect("tokens");
    let undecryptable = Err(format!("{Undecryptable:?}"));
    let token_of = |alg: &str, enc: &str, key: &str| {
        tokens
            .iter()
            .find(|t| t["alg"] == alg && t["enc"] == enc && t["key"] == key)
            .and_then(|t| t["token"].as_str())
            .expect("a minted token")
            .to_string()
    };
    // dir with a 64-byte key on an A256GCM token (which wants 32).
    let t = token_of("dir", "A256GCM", "oct32");
    assert_eq!(decrypt(&t, &minted_key(&doc, "oct64")), undecryptable);

    // The same header with another epk: off the curve, and on another curve.
    let t = token_of("ECDH-ES", "A256GCM", "ec");
    let parts: Vec<&str> = t.split('.').collect();
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header")).expect("json");
    let mut off_curve = header.clone();
    let y = off_curve["epk"]["y"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut yb = URL_SAFE_NO_PAD.decode(&y).expect("y");
    yb[31] ^= 1;
    off_curve["epk"]["y"] = json!(URL_SAFE_NO_PAD.encode(&yb));
    let with_header = |h: &Value| {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        p[0] = URL_SAFE_NO_PAD.encode(h.to_string());
        p.join(".")
    };
    let key = minted_key(&doc, "ec");
    assert_eq!(
        decrypt(&with_header(&off_curve), &key),
        undecryptable,
        "off curve"
    );
    header["epk"] = json!({"kty": "OKP", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([9u8; 32])});
    assert_eq!(
        decrypt(&with_header(&header), &key),
        undecryptable,
        "another curve"
    );

    // Refused before any key: the reason and no decryption attempted.
    let refused = |h: Value, segments: usize| {
        let head = URL_SAFE_NO_PAD.encode(h.to_string());
        let rest = vec!["AAAA"; segments - 1].join(".");
        jwe::parse(&format!("{head}.{rest}"), &all_algs(), &all_encs()).map(|_| ())
    };
    for (h, want) in [
        (
            json!({"alg": "RSA1_5", "enc": "A128GCM"}),
            DenyReason::BadAlg,
        ),
        (
            json!({"alg": "PBES2-HS256+A128KW", "enc": "A128GCM", "p2c": 4_000_000_000u64, "p2s": "AAAA"}),
            DenyReason::BadAlg,
        ),
        (json!({"alg": "dir", "enc": "A128CBC"}), DenyReason::BadAlg),
        (json!({"alg": "none", "enc": "A128GCM"}), DenyReason::BadAlg),
        (
            json!({"alg": "dir", "enc": "A128GCM", "zip": "DEF"}),
            DenyReason::Malformed,
        ),
        (
            json!({"alg": "dir", "enc": "A128GCM", "crit": ["exp"]}),
            DenyReason::Malformed,
        ),
        (
            json!({"alg": "ECDH-ES", "enc": "A128GCM"}),
            DenyReason::Malformed,
        ),
        (
            json!({"alg": "dir", "enc": "A128GCM", "epk": {"kty": "EC"}}),
            DenyReason::Malformed,
        ),
    ] {
        assert_eq!(refused(h.clone(), 5), Err(want), "{h}");
    }
    assert_eq!(
        refused(json!({"alg": "dir", "enc": "A128GCM"}), 3),
        Err(DenyReason::Malformed),
        "a JWS shape"
    );
    // An allowlist narrower than what the token names.
    let t = token_of("A128KW", "A128GCM", "oct16");
    assert_eq!(
        jwe::parse(&t, &[KeyAlg::Dir], &all_encs()).map(|_| ()),
        Err(DenyReason::BadAlg)
    );
    assert_eq!(
        jwe::parse(&t, &all_algs(), &[Enc::A256Gcm]).map(|_| ()),
        Err(DenyReason::BadAlg)
    );
}

/// Keys made by the real tools decrypt through the key sources tokengate loads them
/// with: the seed's session keystore (keytool, one HmacSHA512 secret key), a keystore
/// with RSA and EC private-key entries (keytool), and openssl PKCS #8 PEM files. The secret key's bytes are read by
/// `tests/support/jwe_for_keys.py` on its own (pyasn1, cryptography), and jwcrypto makes
/// every token: `dir` + A256CBC-HS512 for the secret, RSA-OAEP-256 and ECDH-ES+A256KW for
/// the public halves (exported with keytool and openssl).
#[test]
fn keytool_and_openssl_keys_decrypt_tokens_of_jwcrypto() {
    use crate::support::keystore::{keytool_genseckey, sh};
    use tokengate::config::{PasswordEncoding, PasswordSource};
    use tokengate::keys::files::FileSource;
    use tokengate::keys::keystore::KeystoreSource;

    let dir = crate::support::TempDir::new("jwe-keys");
    let pw = "changeit-jwe";
    // The seed's secret key in its own keystore (as PingGateway's JWT session keystore);
    // an RSA and an EC private-key entry in another.
    keytool_genseckey(&dir, "sessions.p12", "symmetric-key", pw);
    for (alias, alg) in [
        ("rsa-key", "-keyalg RSA -keysize 2048"),
        ("ec-key", "-keyalg EC -groupname secp256r1"),
    ] {
        sh(
            &dir,
            &format!(
                "keytool -genkeypair -alias {alias} {alg} -dname CN={alias} -validity 30 \
                 -keystore keystore.p12 -storetype PKCS12 -storepass {pw}"
            ),
        );
        sh(
            &dir,
            &format!(
                "keytool -exportcert -rfc -alias {alias} -keystore keystore.p12 -storepass {pw} -file {alias}.crt"
            ),
        );
        sh(
            &dir,
            &format!("openssl x509 -in {alias}.crt -pubkey -noout -out {alias}.pub"),
        );
    }
    // openssl private keys (PKCS #8) and their public halves.
    sh(
        &dir,
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem",
    );
    sh(
        &dir,
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem",
    );
    for k in ["rsa", "ec"] {
        sh(
            &dir,
            &format!("openssl pkey -in {k}.pem -pubout -out {k}.pub"),
        );
    }

    let script = fixtures().join("../support/jwe_for_keys.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            dir.path("sessions.p12").to_string_lossy().as_ref(),
            pw,
            "symmetric-key",
        ])
        .args(
            ["rsa-key.pub", "ec-key.pub", "rsa.pub", "ec.pub"]
                .map(|f| dir.path(f).to_string_lossy().into_owned()),
        )
        .output()
        .expect("python3 (run scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        made["secret_len"], 64,
        "keytool's HmacSHA512 key is 64 bytes"
    );

    let env: tokengate::app::EnvLookup =
        std::sync::Arc::new(move |name: &str| (name == "JWE_KS_PW").then(|| pw.to_string()));
    let load = |file: &str, aliases: &[&str]| {
        let mut store = KeystoreSource::new(
            dir.path(file),
            PasswordSource::Env("JWE_KS_PW".into()),
            PasswordEncoding::Plain,
            aliases.iter().map(|a| a.to_string()).collect(),
            env.clone(),
        );
        store
            .reload()
            .expect("the keystore loads")
            .expect("keys")
            .keys
    };
    let loaded: Vec<_> = load("sessions.p12", &["symmetric-key"])
        .into_iter()
        .chain(load("keystore.p12", &["rsa-key", "ec-key"]))
        .collect();
    let key = |id: &str| {
        loaded
            .iter()
            .find(|k| k.id == id)
            .and_then(|k| k.decryption.clone())
            .unwrap_or_else(|| panic!("{id} has no decryption key"))
    };
    let text = |token: &Value, key: &DecryptionKey| {
        String::from_utf8(decrypt(token.as_str().expect("token"), key).expect("decrypts"))
            .expect("UTF-8")
    };
    assert_eq!(
        text(&made["secret"], &key("symmetric-key")),
        r#"{"sub":"Sam Carter"}"#
    );
    let public = made["public"].as_array().expect("public tokens");
    assert!(text(&public[0], &key("rsa-key")).ends_with("rsa-key.pub"));
    assert!(text(&public[1], &key("ec-key")).ends_with("ec-key.pub"));
    // A key decrypts only its own tokens.
    assert!(decrypt(public[0].as_str().unwrap_or_default(), &key("ec-key")).is_err());

    for (file, token) in [("rsa.pem", &public[2]), ("ec.pem", &public[3])] {
        let mut source = FileSource::private_pem(dir.path(file), file.into());
        let keys = source.reload().expect("the PEM loads").expect("keys");
        let k = keys.keys[0].decryption.clone().expect("a decryption key");
        assert!(
            text(token, &k).ends_with(&file.replace(".pem", ".pub")),
            "{file}"
        );
        // The thumbprint of its public half is what /keys will show.
        assert_eq!(keys.keys[0].material.thumbprint().len(), 43);
    }
    // A public key in a private-key source is refused, naming what is needed.
    let mut source = FileSource::private_pem(dir.path("rsa.pub"), "x".into());
    let err = source
        .reload()
        .expect_err("a public key is not a decryption key");
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
}
