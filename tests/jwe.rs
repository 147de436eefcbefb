//! The JWE decryptor (SPEC §10, `tokengate::jwe`) on its own: the RFC 7520 §5 examples,
//! tokens jwcrypto and Node's `jose` make for every algorithm × method pair, and hostile JWEs — each
//! altered part, bad CBC padding under a valid tag (indistinguishable from a bad tag), a
//! `dir` key of the wrong size, an `epk` off its curve, refused algorithms and headers;
//! keys made by keytool and openssl; and nested access tokens through a running
//! tokengate. (Shared JWT sessions: `tests/sessions.rs`.)

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
    let forged = bad_padding(token, &cek);
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

    // An AES key made by keytool (`-keyalg AES`) in a decryption keystore is an
    // `A256KW` key; the same keystore source without `for_decryption` refuses it (it
    // verifies nothing).
    sh(
        &dir,
        &format!(
            "keytool -genseckey -alias enc-aes -keyalg AES -keysize 256 -keystore aes.p12 \
             -storepass {pw} -storetype PKCS12"
        ),
    );
    let mut minter = crate::support::dpop::Minter::start();
    let aes = minter.call(&json!({
        "op": "keystore_secret",
        "path": dir.path("aes.p12").to_string_lossy(),
        "password": pw,
        "alias": "enc-aes",
    }))["jwk"]
        .clone();
    let token = minter.seal(&aes, json!({"alg": "A256KW", "enc": "A256GCM"}), "wrapped");
    let store = || {
        KeystoreSource::new(
            dir.path("aes.p12"),
            PasswordSource::Env("JWE_KS_PW".into()),
            PasswordEncoding::Plain,
            vec!["enc-aes".into()],
            env.clone(),
        )
    };
    let loaded = store()
        .for_decryption()
        .reload()
        .expect("the AES keystore loads for decryption")
        .expect("keys");
    let k = loaded.keys[0].decryption.clone().expect("a decryption key");
    assert_eq!(decrypt(&token, &k), Ok(b"wrapped".to_vec()));
    assert!(store().reload().is_err(), "an AES key verifies nothing");
}

/// A fresh random secret of `n` bytes as an oct JWK named `kid`.
fn oct_jwk(kid: &str, n: usize) -> Value {
    let mut k = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut k).expect("random");
    json!({"kty": "oct", "kid": kid, "k": URL_SAFE_NO_PAD.encode(k)})
}

/// `token` with bad CBC padding under a tag that is valid: `cek` is the 32-byte key of
/// a `dir` + `A128CBC-HS256` token (the MAC half is its first 16 bytes).
fn bad_padding(token: &str, cek: &[u8]) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let iv = URL_SAFE_NO_PAD.decode(parts[2]).expect("iv");
    let mut ct = URL_SAFE_NO_PAD.decode(parts[3]).expect("ct");
    // Changing the second-to-last block garbles the last block's padding on decryption.
    let n = ct.len();
    assert!(n >= 32, "two blocks at least");
    ct[n - 17] ^= 0x5a;
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &cek[..16]);
    let mut ctx = hmac::Context::with_key(&mac_key);
    ctx.update(parts[0].as_bytes());
    ctx.update(&iv);
    ctx.update(&ct);
    ctx.update(&((parts[0].len() as u64) * 8).to_be_bytes());
    let tag = ctx.sign();
    format!(
        "{}..{}.{}.{}",
        parts[0],
        parts[2],
        URL_SAFE_NO_PAD.encode(&ct),
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    )
}

/// Nested access tokens through a running tokengate (SPEC §10): JWEs made by jwcrypto
/// around JWSs, decrypted with keys from a `jwks_file` (oct and EC private JWKs) and an
/// openssl `pem_file`, judged as the JWS inside; `require_encryption`; every hostile
/// JWE denied with 401 and the right reason, a bad tag and bad padding answered alike;
/// `/keys`, the decryption metric, the cache and `tokengate verify`.
#[test]
fn encrypted_access_tokens_through_a_running_tokengate() {
    use crate::support::dpop::Minter;
    use crate::support::keystore::sh;
    use crate::support::{TempDir, Tokengate, fixture_issuer, mint};
    use jsonwebtoken::Algorithm;

    let dir = TempDir::new("jwe-http");
    let mut minter = Minter::start();
    let dir32 = oct_jwk("dir-1", 32);
    let kw16 = oct_jwk("kw-128", 16);
    let mut ec = minter.key("ES256").private_jwk;
    ec["kid"] = json!("ec-dec");
    dir.write(
        "dec.jwks.json",
        json!({"keys": [dir32, kw16, ec]}).to_string(),
    );
    sh(
        &dir,
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-dec.pem",
    );
    sh(
        &dir,
        "openssl pkey -in rsa-dec.pem -pubout -out rsa-dec.pub",
    );
    let rsa_pub = json!({"pem": std::fs::read_to_string(dir.path("rsa-dec.pub")).expect("pub")});

    let mut sealed = fixture_issuer();
    sealed["name"] = json!("sealed");
    sealed["issuer"] = json!("https://sealed.example");
    sealed["require_encryption"] = json!(true);
    let config = json!({
        "issuers": [fixture_issuer(), sealed],
        "decryption": {
            "key_sources": [
                {"jwks_file": dir.path("dec.jwks.json").to_string_lossy()},
                {"pem_file": dir.path("rsa-dec.pem").to_string_lossy(), "kid": "rsa-dec"}
            ],
            "algorithms": ["dir", "A128KW", "RSA-OAEP-256", "ECDH-ES"],
            "methods": ["A256GCM", "A128CBC-HS256"]
        },
        "forward": {"claims_header": "x-claims"}
    });
    let tg = Tokengate::start(&dir, config);
    tg.wait_ready();

    let inner = mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &mint::claims());
    let inner_payload = inner.split('.').nth(1).expect("payload").to_string();
    let h = |alg: &str, enc: &str, kid: Option<&str>| {
        let mut h = json!({"alg": alg, "enc": enc, "cty": "JWT"});
        if let Some(k) = kid {
            h["kid"] = json!(k);
        }
        h
    };
    let decryptions = |key: &str, matched: &str, result: &str| {
        tg.metrics()
            .value(
                "tokengate_key_decryptions_total",
                &[
                    ("issuer", "decryption"),
                    ("key", key),
                    ("match", matched),
                    ("result", result),
                ],
            )
            .unwrap_or(0.0)
    };

    // Every key management algorithm allowed, by kid and by fallback.
    let good = minter.seal(&dir32, h("dir", "A256GCM", Some("dir-1")), &inner);
    for (what, token) in [
        ("dir + A256GCM by kid", good.clone()),
        (
            "A128KW + A128CBC-HS256",
            minter.seal(&kw16, h("A128KW", "A128CBC-HS256", Some("kw-128")), &inner),
        ),
        (
            "RSA-OAEP-256 by kid",
            minter.seal(
                &rsa_pub,
                h("RSA-OAEP-256", "A256GCM", Some("rsa-dec")),
                &inner,
            ),
        ),
        (
            "RSA-OAEP-256 without kid",
            minter.seal(&rsa_pub, h("RSA-OAEP-256", "A256GCM", None), &inner),
        ),
        (
            "ECDH-ES with an unknown kid",
            minter.seal(&ec, h("ECDH-ES", "A128CBC-HS256", Some("nope")), &inner),
        ),
        (
            "no cty",
            minter.seal(&dir32, json!({"alg": "dir", "enc": "A256GCM"}), &inner),
        ),
    ] {
        let r = tg.check_token("/orders", &token);
        assert_eq!(r.status, 200, "{what}: {}", r.body_text());
        assert_eq!(r.header("x-auth-subject"), Some("alice"), "{what}");
        assert_eq!(r.header("x-claims"), Some(inner_payload.as_str()), "{what}");
    }
    assert_eq!(decryptions("dir-1", "kid", "ok"), 1.0);
    assert_eq!(decryptions("rsa-dec", "kid", "ok"), 1.0);
    assert_eq!(decryptions("rsa-dec", "fallback", "ok"), 1.0);
    assert_eq!(decryptions("ec-dec", "fallback", "ok"), 1.0);
    // Again: answered from the cache (no decryption), forward headers as before.
    let r = tg.check_token("/orders", &good);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-claims"), Some(inner_payload.as_str()));
    assert_eq!(
        decryptions("dir-1", "kid", "ok"),
        1.0,
        "a cached token is not decrypted again"
    );

    // require_encryption: the bare token of that issuer is refused, encrypted it passes.
    let mut c = mint::claims();
    c["iss"] = json!("https://sealed.example");
    let bare = mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &c);
    let r = tg.check_token("/orders", &bare);
    assert_eq!((r.status, r.error()), (401, "bad_alg".to_string()));
    let r = tg.check_token(
        "/orders",
        &minter.seal(&dir32, h("dir", "A256GCM", Some("dir-1")), &bare),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());

    // Hostile JWEs.
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let raw = |header: Value, key: &str| {
        format!(
            "{}.{key}.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
            b64(&header.to_string())
        )
    };
    let k32 = URL_SAFE_NO_PAD
        .decode(dir32["k"].as_str().expect("k"))
        .expect("k");
    let cbc = minter.seal(&dir32, h("dir", "A128CBC-HS256", Some("dir-1")), &inner);
    let mut truncated: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut tag = URL_SAFE_NO_PAD.decode(&truncated[4]).expect("tag");
    tag.pop();
    truncated[4] = URL_SAFE_NO_PAD.encode(tag);
    let off_curve = json!({
        "alg": "ECDH-ES", "enc": "A256GCM", "kid": "ec-dec",
        "epk": {"kty": "EC", "crv": "P-256",
                "x": b64("\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}\u{1}"),
                "y": b64("\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}\u{2}")}
    });
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "RSA1_5",
            raw(json!({"alg": "RSA1_5", "enc": "A256GCM"}), "a2V5"),
            "bad_alg",
        ),
        (
            "PBES2 with a huge p2c",
            raw(
                json!({"alg": "PBES2-HS256+A128KW", "enc": "A256GCM", "p2s": "c2FsdA", "p2c": 2_000_000_000u64}),
                "a2V5",
            ),
            "bad_alg",
        ),
        (
            "an alg outside the allowlist",
            minter.seal(&dir32, h("A256KW", "A256GCM", Some("dir-1")), &inner),
            "bad_alg",
        ),
        (
            "a method outside the allowlist",
            minter.seal(&oct_jwk("x", 64), h("dir", "A256CBC-HS512", None), &inner),
            "bad_alg",
        ),
        (
            "zip",
            minter.seal(
                &dir32,
                json!({"alg": "dir", "enc": "A256GCM", "zip": "DEF"}),
                &inner,
            ),
            "malformed",
        ),
        (
            "crit",
            raw(
                json!({"alg": "dir", "enc": "A256GCM", "crit": ["exp"], "exp": 1}),
                "",
            ),
            "malformed",
        ),
        ("altered tag", flip(&good, 4), "bad_decryption"),
        ("truncated tag", truncated.join("."), "bad_decryption"),
        ("altered IV", flip(&good, 2), "bad_decryption"),
        ("altered ciphertext", flip(&good, 3), "bad_decryption"),
        (
            "bad padding under a valid tag",
            bad_padding(&cbc, &k32),
            "bad_decryption",
        ),
        ("bad tag (CBC)", flip(&cbc, 4), "bad_decryption"),
        (
            "a dir key of the wrong size for the method",
            minter.seal(&dir32, h("dir", "A128CBC-HS256", Some("kw-128")), &inner),
            "bad_decryption",
        ),
        ("an epk off the curve", raw(off_curve, ""), "bad_decryption"),
        (
            "a JWE in a JWE",
            minter.seal(&dir32, h("dir", "A256GCM", Some("dir-1")), &good),
            "bad_decryption",
        ),
        (
            "a plaintext that is not a JWS",
            minter.seal(
                &dir32,
                h("dir", "A256GCM", Some("dir-1")),
                "{\"sub\":\"alice\"}",
            ),
            "bad_decryption",
        ),
        (
            "a cty that is not JWT",
            minter.seal(
                &dir32,
                json!({"alg": "dir", "enc": "A256GCM", "cty": "text/plain"}),
                &inner,
            ),
            "bad_decryption",
        ),
        (
            "a JWS inside that does not verify",
            minter.seal(
                &dir32,
                h("dir", "A256GCM", Some("dir-1")),
                flip(&format!("{inner}.x.x"), 2)
                    .rsplitn(3, '.')
                    .nth(2)
                    .expect("the JWS"),
            ),
            "bad_signature",
        ),
        (
            "a ciphertext over token.max_bytes",
            minter.seal(
                &dir32,
                h("dir", "A256GCM", Some("dir-1")),
                &"a.b.".repeat(3000),
            ),
            "too_large",
        ),
    ];
    let mut answers = Vec::new();
    for (what, token, want) in &cases {
        let r = tg.check_token("/orders", token);
        assert_eq!(
            (r.status, r.error().as_str()),
            (401, *want),
            "{what}: {}",
            r.body_text()
        );
        answers.push((*what, r));
    }
    // No padding oracle: bad padding and a bad tag get the very same answer.
    let answer = |what: &str| {
        let r = &answers.iter().find(|(w, _)| *w == what).expect(what).1;
        (
            r.status,
            r.header("www-authenticate").map(str::to_string),
            r.body.clone(),
        )
    };
    assert_eq!(
        answer("bad padding under a valid tag"),
        answer("bad tag (CBC)")
    );
    assert!(
        answer("bad tag (CBC)")
            .1
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "a Bearer invalid_token challenge"
    );
    assert_eq!(
        crate::support::http::get(tg.admin, "/healthz").map(|r| r.status),
        Some(200),
        "tokengate is alive"
    );
    assert!(decryptions("dir-1", "kid", "bad_decryption") >= 4.0);

    // /keys: the decryption keys, `use: "enc"`, with their use.
    let keys = tg.keys();
    let listed: Vec<&Value> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["issuer"] == "decryption")
        .collect();
    let mut ids: Vec<&str> = listed.iter().filter_map(|k| k["key"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["dir-1", "ec-dec", "kw-128", "rsa-dec"]);
    assert!(listed.iter().all(|k| k["use"] == "enc"), "{listed:?}");
    let dir1 = listed.iter().find(|k| k["key"] == "dir-1").expect("dir-1");
    assert!(dir1["validations"].as_u64() >= Some(3), "{dir1}");
    assert!(dir1["last_used"].is_string(), "{dir1}");
    assert!(
        !keys.to_string().contains(dir32["k"].as_str().expect("k")),
        "no key material in /keys"
    );
    let metrics = crate::support::http::get(tg.admin, "/metrics")
        .expect("metrics")
        .body_text();
    assert!(!metrics.contains(dir32["k"].as_str().expect("k")));
    assert!(!tg.logs().contains(dir32["k"].as_str().expect("k")));

    // `tokengate verify` says which key decrypted the token and how.
    let cfg = tg.config.to_string_lossy().into_owned();
    let (code, out, err) = crate::support::run(&["verify", "--config", &cfg, &good], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision: allow"), "{out}");
    assert!(
        out.contains("decrypted by: dir-1 (decryption key, source jwks_file, matched by kid)"),
        "{out}"
    );
    assert!(out.contains("key: rsa-1"), "{out}");
    let (code, out, _) = crate::support::run(&["verify", "--config", &cfg, &flip(&good, 4)], None);
    assert_eq!(code, 1);
    assert!(out.contains("deny (bad_decryption)"), "{out}");
}
