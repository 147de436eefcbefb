//! Keystores for the integration tests, in one place: the committed fixtures of
//! `tests/fixtures/keystores/` (made once by the real `keytool` and `openssl` through
//! `make.sh` there, which says what each file is and which test uses it), and, for the
//! rotation drills that must run the operator's runbook at test time, the steps of
//! PingGateway's rotation guide as functions over the real tools. A missing tool fails the
//! test, never skips it (`scripts/install-test-deps.sh` installs openssl and keytool).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{TempDir, fixtures};

/// The guide's certificate subject.
pub const SUBJECT: &str = "/CN=ig.example.com/OU=example/O=com/L=fr/ST=fr/C=fr";

/// A file of `tests/fixtures/keystores/` (see `make.sh` there for what each one is).
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join("keystores").join(name)
}

/// Copies the fixture `name` into `dir` as `as_name` and returns the copy's path, so a
/// test that rewrites or replaces its keystore never touches the committed file. The
/// copy is not atomic: to replace a keystore a running tokengate watches, copy inside
/// [`swap_keystore`].
pub fn copy_fixture(dir: &TempDir, name: &str, as_name: &str) -> PathBuf {
    let from = fixture(name);
    let to = dir.path(as_name);
    std::fs::copy(&from, &to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    to
}

/// Runs `command` (program and arguments, split at whitespace: no argument here has a
/// space) in `dir`; a missing tool or a failure fails the test with its output.
pub fn sh(dir: &TempDir, command: &str) -> String {
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    let out = Command::new(program)
        .args(words)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (the rotation drills need openssl, keytool, java): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{command}` failed ({}): {text}",
        out.status
    );
    text
}

/// The guide's step 1.1: a new RSA key pair and self-signed certificate.
pub fn openssl_req(dir: &TempDir, keyout: &str, certout: &str) {
    sh(
        dir,
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -subj {SUBJECT} \
             -keyout {keyout} -out {certout} -days 365"
        ),
    );
}

/// The guide's step 3.2: import a certificate as a trusted entry (`-noprompt` answers
/// "Trust this certificate?").
pub fn keytool_import_cert(dir: &TempDir, store: &str, alias: &str, cert: &str, password: &str) {
    sh(
        dir,
        &format!(
            "keytool -import -trustcacerts -rfc -noprompt -alias {alias} -file {cert} \
             -keystore {store} -storetype PKCS12 -storepass {password}"
        ),
    );
}

/// A PKCS#12 keystore `store` (a file name in `dir`, or an absolute path without spaces)
/// holding one trusted certificate per alias, made the way the PingGateway docs make
/// one: `openssl req -x509`, then `keytool -import`, per alias.
pub fn trusted_keystore<A: AsRef<str>>(
    dir: &TempDir,
    store: &str,
    aliases: impl IntoIterator<Item = A>,
    password: &str,
) {
    for (i, alias) in aliases.into_iter().enumerate() {
        let (key, cert) = (format!("k{i}.key"), format!("c{i}.pem"));
        openssl_req(dir, &key, &cert);
        keytool_import_cert(dir, store, alias.as_ref(), &cert, password);
    }
}

/// The guide's deprovisioning step: `keytool -delete`.
pub fn keytool_delete(dir: &TempDir, store: &str, alias: &str, password: &str) {
    sh(
        dir,
        &format!(
            "keytool -delete -alias {alias} -keystore {store} -storepass {password} \
             -storetype PKCS12 -keypass {password}"
        ),
    );
}

/// The guide's `keytool -list`, checked to hold exactly `aliases`.
pub fn keytool_list(dir: &TempDir, store: &str, password: &str, aliases: &[&str]) {
    let out = sh(
        dir,
        &format!("keytool -list -keystore {store} -storepass {password} -storetype PKCS12"),
    );
    let count = match aliases.len() {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    };
    assert!(
        out.contains(&format!("Your keystore contains {count}")),
        "keytool -list: {out}"
    );
    for a in aliases {
        assert!(
            out.contains(&format!("{a},")),
            "keytool -list lacks {a}: {out}"
        );
    }
}

/// The guide's `keytool -genseckey` of an HmacSHA512 key (keytool picks the bytes, which
/// cannot be read back).
pub fn keytool_genseckey(dir: &TempDir, store: &str, alias: &str, password: &str) {
    sh(
        dir,
        &format!(
            "keytool -genseckey -alias {alias} -keystore {store} -storepass {password} \
             -storetype PKCS12 -keyalg HmacSHA512 -keysize 512"
        ),
    );
}

/// Copies `store` to a new file, lets `edit` change the copy, and renames it over the
/// original: how a Kubernetes Secret update (or any atomic deploy) replaces a keystore.
pub fn swap_keystore(dir: &TempDir, store: &str, edit: impl FnOnce(&str)) {
    let next = format!("{store}.next");
    std::fs::copy(dir.path(store), dir.path(&next)).unwrap_or_else(|e| panic!("copy {store}: {e}"));
    edit(&next);
    std::fs::rename(dir.path(&next), dir.path(store))
        .unwrap_or_else(|e| panic!("rename {next}: {e}"));
}

/// Stores HMAC secret-key entries with bytes the test knows (keytool -genseckey makes
/// its own random bytes, which cannot be read back to sign tokens). Same `KeyStore`
/// API, same PKCS#12 secret bag as keytool.
const PUT_SECRET_JAVA: &str = r#"import java.io.*;
import java.security.KeyStore;
import javax.crypto.spec.SecretKeySpec;

/** PutSecret KEYSTORE STOREPASS ALIAS HEX: adds an HmacSHA512 secret-key entry (in place). */
public class PutSecret {
    public static void main(String[] a) throws Exception {
        File file = new File(a[0]);
        char[] pass = a[1].toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        if (file.exists()) {
            try (InputStream in = new FileInputStream(file)) { ks.load(in, pass); }
        } else {
            ks.load(null, pass);
        }
        byte[] key = java.util.HexFormat.of().parseHex(a[3]);
        ks.setEntry(a[2], new KeyStore.SecretKeyEntry(new SecretKeySpec(key, "HmacSHA512")),
            new KeyStore.PasswordProtection(pass));
        try (OutputStream out = new FileOutputStream(file)) { ks.store(out, pass); }
    }
}
"#;

/// Compiles PutSecret into `dir` (javac), or leaves it for single-file source launch
/// (`java PutSecret.java`, JRE 11+) when there is no javac.
pub fn prepare_put_secret(dir: &TempDir) {
    dir.write("PutSecret.java", PUT_SECRET_JAVA);
    match Command::new("javac")
        .args(["-d", "."])
        .arg("PutSecret.java")
        .current_dir(&dir.0)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("javac: {e}"),
    }
}

/// Adds the secret `bytes` as `alias` to `store` (created if missing); needs
/// [`prepare_put_secret`] first.
pub fn put_secret(dir: &TempDir, store: &str, password: &str, alias: &str, bytes: &[u8]) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if dir.path("PutSecret.class").exists() {
        sh(
            dir,
            &format!("java -cp . PutSecret {store} {password} {alias} {hex}"),
        );
    } else {
        sh(
            dir,
            &format!("java PutSecret.java {store} {password} {alias} {hex}"),
        );
    }
}
