//! Deployment recipes under `deploy/` are valid and agree with each other and with
//! tokengate: every YAML (every document) and JSON file parses as shipped; the Envoy
//! bootstraps pass `envoy --mode validate` as shipped and make paths canonical and refuse
//! header names with `_` before the check (SPEC §4a); the nginx config hands tokengate
//! the original method and URI, and the nginx and Traefik examples name the
//! `forward_auth` family their tokengate config sets, which `check-config` accepts;
//! every Kubernetes object passes the 1.29 and 1.31
//! schemas (kubernetes-validate, strict); `kustomize build` of the base, both overlays
//! (sidecar, ext-authz) and the monitoring objects works; the built manifests match the
//! config inside their ConfigMap (listener ports, probes, mounts, the keystore Secret);
//! that config passes `tokengate check-config` against a keystore made here with openssl
//! and keytool; Istio's extension providers name the ext-authz Service and its ports; the
//! PrometheusRule carries the groups of `deploy/prometheus/tokengate-rules.yaml`; the
//! Dockerfile builds like CI on the toolchain CI uses and runs distroless as non-root.
//!
//! The YAML-heavy checks live in `tests/deploy_check.py` (PyYAML, kubernetes-validate,
//! kustomize; installed by `scripts/install-test-deps.sh`), one subcommand per test here.
//! A missing tool fails the test, never skips it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokengate::config::{DEFAULT_ADMIN, DEFAULT_AUTHZ_GRPC, DEFAULT_AUTHZ_HTTP, DEFAULT_PROXY};

use crate::support::{TempDir, bin, envoy, fixtures, keystore};

/// The keystore password the test gives the configs (through `password_env`, base64).
const STORE_PASSWORD: &str = "deploy-test+store/pass";
/// Where the manifests mount the keystore Secret; the test puts its keystore there instead.
const SECRETS_MOUNT: &str = "/secrets/";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `python3 tests/deploy_check.py SUB` and returns its standard output; fails the
/// test with everything it printed when it reports a problem.
fn deploy_check(sub: &str) -> String {
    let out = Command::new("python3")
        .args(["tests/deploy_check.py", sub])
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run python3 (scripts/install-test-deps.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/deploy_check.py {sub} failed ({}):\n{stdout}{stderr}",
        out.status
    );
    stdout
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `tokengate check-config --config FILE` with exactly `env` as its environment.
fn check_config(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("spawn tokengate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Every `.yaml`/`.yml` file under `deploy/` (all its documents) and every `.json` file
/// parses as shipped, with no `${NAME}` placeholder outside comments; a failure names the
/// file.
#[test]
fn every_yaml_and_json_file_under_deploy_parses_as_shipped() {
    deploy_check("parse");
}

/// Every HTTP connection manager of `deploy/envoy/*.yaml` sets `normalize_path`,
/// `merge_slashes`, `path_with_escaped_slashes_action: REJECT_REQUEST` and
/// `headers_with_underscores_action: REJECT_REQUEST`; the HTTP ext_authz filter passes
/// `x-tokengate-shadow-deny` upstream; the files have the shape and default ports that
/// `support::envoy::point` changes.
#[test]
fn envoy_configs_normalise_paths_and_refuse_underscore_headers() {
    deploy_check("envoy");
}

/// `envoy --mode validate` accepts every `deploy/envoy/*.yaml` as shipped, before any
/// test changes an address.
#[test]
fn envoy_configs_validate_as_shipped() {
    let dir = root().join("deploy/envoy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "deploy/envoy: {files:?}");
    for file in files {
        let (ok, out) = envoy::validate(&file);
        assert!(
            ok,
            "{}: envoy --mode validate failed:\n{out}",
            file.display()
        );
    }
}

/// `deploy/nginx/auth-request.conf` passes `nginx -t` once substituted, sets
/// `X-Original-Method $request_method` and `X-Original-URI $request_uri` once each on the
/// auth subrequest, says `"forward_auth": {"headers": "nginx"}` (as its example config
/// does), replaces every forward header from tokengate's answer, keeps `_` header names
/// dropped and refuses `//`.
#[test]
fn nginx_config_hands_tokengate_the_original_method_and_uri() {
    deploy_check("nginx");
}

/// `deploy/traefik/dynamic.yaml` against `deploy/traefik/tokengate.json`: ForwardAuth at
/// the config's `authz_http`, `trustForwardHeader: false`, `authResponseHeaders` the
/// config's forward headers and `x-tokengate-shadow-deny`, their `_` spellings deleted
/// before the check, `forward_auth.headers: "traefik"`.
#[test]
fn traefik_forward_auth_matches_its_tokengate_config() {
    deploy_check("traefik");
}

/// The example tokengate configs next to the nginx and Traefik recipes pass
/// `check-config` (so `forward_auth` and every other field is one tokengate knows), with
/// their key sources swapped for the fixture JWKS file (the examples name an identity
/// provider this test cannot reach).
#[test]
fn front_proxy_example_configs_pass_check_config() {
    let dir = TempDir::new("deploy-front-configs");
    for (family, file) in [
        ("nginx", "deploy/nginx/tokengate.json"),
        ("traefik", "deploy/traefik/tokengate.json"),
    ] {
        let mut config: Value =
            serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config["forward_auth"]["headers"], family, "{file}");
        let issuers = config["issuers"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("{file}: no issuers"));
        for issuer in issuers {
            issuer["key_sources"] =
                serde_json::json!([{ "jwks_file": fixtures().join("jwks.json") }]);
        }
        let path = dir.write(&format!("{family}.json"), config.to_string());
        let (code, out) = check_config(&path, &[]);
        assert_eq!(
            code, 0,
            "{file}: check-config failed:\n{out}\nconfig:\n{config}"
        );
    }
}

#[test]
fn kubernetes_objects_pass_the_1_29_and_1_31_schemas() {
    deploy_check("schemas");
}

#[test]
fn kustomize_builds_the_base_both_overlays_and_monitoring() {
    deploy_check("build");
}

#[test]
fn sidecar_overlay_puts_a_native_sidecar_in_front_of_the_app() {
    deploy_check("sidecar");
}

#[test]
fn ext_authz_overlay_serves_both_authz_listeners_and_autoscales() {
    deploy_check("ext-authz");
}

#[test]
fn istio_extension_providers_name_the_ext_authz_service_and_ports() {
    deploy_check("istio");
}

#[test]
fn monitoring_scrapes_both_overlays_and_alerts_equal_the_rules_file() {
    deploy_check("monitoring");
}

/// The config each overlay's ConfigMap carries (as `kustomize build` renders it) passes
/// `check-config`, with `/secrets/...` moved to a temp dir holding the keystore it names,
/// made with the aliases it maps, and the password in the variable it names, base64 as
/// `password_encoding` says. A wrong password must fail: the keystore really is loaded.
#[test]
fn configmap_configs_pass_check_config_with_the_keystore_they_expect() {
    let configs: BTreeMap<String, String> =
        serde_json::from_str(&deploy_check("configs")).expect("deploy_check.py configs");
    assert_eq!(
        configs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ext-authz", "sidecar"]
    );
    let dir = TempDir::new("deploy-configs");
    let secrets = dir.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap_or_else(|e| panic!("{}: {e}", secrets.display()));

    // Every keystore the configs name, with every alias mapped to it and its password variable.
    let mut stores: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut password_envs = BTreeSet::new();
    for (name, text) in &configs {
        let config: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} config: {e}"));
        for issuer in config["issuers"].as_array().into_iter().flatten() {
            for source in issuer["key_sources"].as_array().into_iter().flatten() {
                let Some(path) = source["keystore"].as_str() else {
                    continue;
                };
                let file = path.strip_prefix(SECRETS_MOUNT).unwrap_or_else(|| {
                    panic!("{name}: keystore {path} is not in the Secret mount {SECRETS_MOUNT}")
                });
                let aliases = source["aliases"].as_array().into_iter().flatten();
                stores
                    .entry(file.to_string())
                    .or_default()
                    .extend(aliases.filter_map(Value::as_str).map(str::to_lowercase));
                assert_eq!(source["password_encoding"], "base64", "{name}: {source}");
                password_envs.insert(
                    source["password_env"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: no password_env in {source}"))
                        .to_string(),
                );
            }
        }
    }
    assert!(!stores.is_empty(), "no config uses a keystore: {configs:?}");
    assert_eq!(
        password_envs.iter().map(String::as_str).collect::<Vec<_>>(),
        ["KEYSTORE_SECRET_ID"],
        "the manifests set KEYSTORE_SECRET_ID from the Secret"
    );
    for (file, aliases) in &stores {
        let store = secrets.join(file);
        keystore::trusted_keystore(&dir, &store.to_string_lossy(), aliases, STORE_PASSWORD);
    }

    let good = STANDARD.encode(STORE_PASSWORD);
    let wrong = STANDARD.encode("not-the-store-password");
    let var = password_envs
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let moved = format!("\"{}/", secrets.display());
    for (name, text) in &configs {
        let local = text.replace(&format!("\"{SECRETS_MOUNT}"), &moved);
        let config: Value = serde_json::from_str(&local).unwrap_or_default();
        let mut paths = Vec::new();
        collect_paths(&config, &mut paths);
        for path in paths {
            assert!(
                !path.starts_with('/') || path.starts_with(&moved[1..]),
                "{name}: file {path} outside {SECRETS_MOUNT} (the test cannot provide it)"
            );
        }
        let file = dir.write(&format!("{name}.json"), &local);

        let (code, out) = check_config(&file, &[(var, &good)]);
        assert_eq!(
            code, 0,
            "{name}: check-config failed:\n{out}\nconfig:\n{local}"
        );
        for alias in stores.values().flatten() {
            assert!(
                out.contains(alias.as_str()),
                "{name}: alias {alias} not in the inventory:\n{out}"
            );
        }
        let (code, out) = check_config(&file, &[(var, &wrong)]);
        assert_eq!(
            code, 1,
            "{name}: a wrong keystore password must fail check-config:\n{out}"
        );
    }
}

/// The values of the config's file fields (key files, passwords, CA bundles, revocations).
fn collect_paths<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    const FILE_FIELDS: [&str; 6] = [
        "keystore",
        "jwks_file",
        "pem_file",
        "password_file",
        "ca_file",
        "file",
    ];
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_paths(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                match v.as_str() {
                    Some(path) if FILE_FIELDS.contains(&key.as_str()) => out.push(path),
                    _ => collect_paths(v, out),
                }
            }
        }
        _ => {}
    }
}

/// One Dockerfile stage: its `FROM` line and its instructions (keyword, arguments).
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
    }
}

/// Splits a Dockerfile into stages; continuation lines are joined, comments dropped.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_string());
        if keyword == "FROM" {
            stages.push(Stage {
                from: args,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, args));
        }
    }
    stages
}

/// The toolchain CI runs on: `rustc --version` of this machine (CI runs `cargo test`
/// here with no rust-toolchain file; Cargo.toml's `rust-version` is only the minimum).
fn rustc_version() -> String {
    let out = Command::new("rustc")
        .arg("--version")
        .output()
        .expect("rustc --version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("rustc --version printed {text:?}"))
        .to_string()
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

#[test]
fn dockerfile_builds_like_ci_and_runs_distroless_as_non_root() {
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    assert!(
        stages.len() >= 2,
        "a multi-stage build: {} stage(s)",
        stages.len()
    );
    let (build, runtime) = (&stages[0], &stages[stages.len() - 1]);

    // Build stage: the official Rust image of CI's toolchain.
    let mut from = build.from.split_whitespace();
    let image = from.next().unwrap_or_default();
    let alias = match (from.next(), from.next()) {
        (Some(kw), Some(name)) if kw.eq_ignore_ascii_case("as") => name.to_string(),
        _ => panic!("the build stage needs a name: FROM {}", build.from),
    };
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the build stage is not the official rust image: {image}"));
    let (version, variant) = tag.split_once('-').unwrap_or((tag, ""));
    let rustc = rustc_version();
    let same = if version.split('.').count() == 3 {
        version == rustc
    } else {
        rustc.starts_with(&format!("{version}."))
    };
    assert!(
        same,
        "the build image's Rust {version} is not CI's rustc {rustc}: update deploy/Dockerfile"
    );

    // `cargo build --release --locked` with CI's features: the defaults, nothing more.
    let builds: Vec<&str> = build
        .all("RUN")
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one cargo build in the build stage: {builds:?}"
    );
    let words: Vec<&str> = builds[0].split_whitespace().collect();
    for flag in ["--release", "--locked"] {
        assert!(
            words.contains(&flag),
            "cargo build without {flag}: {}",
            builds[0]
        );
    }
    for flag in [
        "--features",
        "-F",
        "--all-features",
        "--no-default-features",
    ] {
        assert!(
            !words
                .iter()
                .any(|w| *w == flag || w.starts_with(&format!("{flag}="))),
            "cargo build with {flag} (CI builds default features only): {}",
            builds[0]
        );
    }

    // Runtime: distroless (or scratch), the build's Debian release for glibc.
    let runtime_image = runtime.from.split_whitespace().next().unwrap_or_default();
    assert!(
        runtime_image.starts_with("gcr.io/distroless/") || runtime_image == "scratch",
        "the final stage is not distroless or scratch: {runtime_image}"
    );
    for (codename, debian) in [("bookworm", "debian12"), ("trixie", "debian13")] {
        if runtime_image.contains(debian) {
            assert!(
                variant.contains(codename),
                "runtime {runtime_image} needs a {codename} build image, not {image}"
            );
        }
    }

    // Non-root, by number (runAsNonRoot can only verify a numeric user).
    let users: Vec<&str> = runtime.all("USER").collect();
    assert_eq!(users.len(), 1, "one USER in the final stage: {users:?}");
    for id in users[0].split(':') {
        let n: u32 = id
            .parse()
            .unwrap_or_else(|_| panic!("USER {} is not numeric", users[0]));
        assert_ne!(n, 0, "USER {} is root", users[0]);
    }

    // ENTRYPOINT ["…/tokengate", "serve"], the binary copied from the build stage there.
    let entry: Vec<String> = runtime
        .all("ENTRYPOINT")
        .last()
        .and_then(|e| serde_json::from_str(e).ok())
        .expect("the final stage needs an exec-form ENTRYPOINT");
    assert!(
        entry.len() == 2 && entry[0].ends_with("/tokengate") && entry[1] == "serve",
        "ENTRYPOINT {entry:?}, want [\"…/tokengate\", \"serve\"]"
    );
    let copied = runtime.all("COPY").any(|c| {
        let w: Vec<&str> = c.split_whitespace().collect();
        w.first() == Some(&format!("--from={alias}").as_str())
            && w.last() == Some(&entry[0].as_str())
    });
    assert!(
        copied,
        "no COPY --from={alias} … {} in the final stage",
        entry[0]
    );

    // The config path, and every default listener port, exposed.
    let env: Vec<&str> = runtime.all("ENV").collect();
    let config = env
        .iter()
        .find_map(|e| e.strip_prefix("TOKENGATE_CONFIG="))
        .unwrap_or_else(|| panic!("no ENV TOKENGATE_CONFIG=… in the final stage: {env:?}"));
    assert!(
        config.starts_with('/') && config.ends_with(".json"),
        "TOKENGATE_CONFIG={config}"
    );
    let exposed: BTreeSet<&str> = runtime
        .all("EXPOSE")
        .flat_map(str::split_whitespace)
        .collect();
    for addr in [
        DEFAULT_PROXY,
        DEFAULT_AUTHZ_HTTP,
        DEFAULT_AUTHZ_GRPC,
        DEFAULT_ADMIN,
    ] {
        let port = port_of(addr);
        assert!(
            exposed.contains(port.as_str()),
            "EXPOSE lacks {port} ({addr}): {exposed:?}"
        );
    }
}

/// `.dockerignore` semantics, simplified: `*` and `?` within a path segment, `**` across
/// segments; a pattern that matches a directory excludes what it holds; `!` re-includes.
fn ignored(path: &str, patterns: &[String]) -> bool {
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => seg(&p[1..], s) || (!s.is_empty() && seg(p, &s[1..])),
            (Some(b'?'), Some(_)) => seg(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => seg(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn segs(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => segs(&p[1..], s) || (!s.is_empty() && segs(p, &s[1..])),
            (Some(a), Some(b)) => seg(a.as_bytes(), b.as_bytes()) && segs(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for raw in patterns {
        let (negated, pattern) = match raw.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, raw.as_str()),
        };
        let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=parts.len()).any(|n| segs(&pat, &parts[..n])) {
            excluded = !negated;
        }
    }
    excluded
}

#[test]
fn dockerignore_keeps_what_the_build_copies_and_drops_target_and_git() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for heavy in [
        "target",
        ".git",
        "target/release/tokengate",
        "fuzz/artifacts/crash-1",
    ] {
        assert!(ignored(heavy, &patterns), "{heavy} is not in .dockerignore");
    }

    // The build stage's COPY sources: present in the repository, not ignored.
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    let mut sources: Vec<String> = Vec::new();
    for copy in stages[0].all("COPY") {
        let words: Vec<&str> = copy
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        sources.extend(
            words[..words.len().saturating_sub(1)]
                .iter()
                .map(|w| w.to_string()),
        );
    }
    for src in &sources {
        assert!(
            root().join(src).exists(),
            "COPY {src}: not in the repository"
        );
        assert!(
            !ignored(src, &patterns),
            "COPY {src}: excluded by .dockerignore"
        );
    }

    // Every target Cargo.toml names must be in the context: cargo refuses a manifest
    // whose target files are missing, benches and tests included.
    let manifest = read("Cargo.toml");
    let mut targets: Vec<String> = Vec::new();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if let Some(value) = line
            .strip_prefix("path =")
            .or_else(|| line.strip_prefix("path="))
        {
            if ["[lib]", "[[bin]]", "[[test]]", "[[bench]]", "[[example]]"]
                .contains(&section.as_str())
            {
                targets.push(value.trim().trim_matches('"').to_string());
            }
        } else if section == "[[bench]]" && line.starts_with("name") {
            let name = line
                .split('=')
                .nth(1)
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            targets.push(format!("benches/{name}.rs"));
        }
    }
    assert!(
        targets.iter().any(|t| t == "src/main.rs"),
        "Cargo.toml targets: {targets:?}"
    );
    for target in targets.iter().filter(|t| root().join(t).exists()) {
        let copied = sources.iter().any(|s| {
            let s = s.trim_end_matches('/');
            s == "." || target == s || target.starts_with(&format!("{s}/"))
        });
        assert!(
            copied,
            "{target} (a Cargo.toml target) is not copied into the build stage: {sources:?}"
        );
        assert!(
            !ignored(target, &patterns),
            "{target} (a Cargo.toml target) is excluded by .dockerignore"
        );
    }
}

#[test]
fn deploying_guide_names_the_files_to_apply_and_they_exist() {
    // The deploying guide, docs/deploying.md, as a whole.
    let guide = read("docs/deploying.md");
    assert!(
        guide.starts_with("# Deploying"),
        "docs/deploying.md does not start with its \"# Deploying\" title"
    );
    for needed in [
        "docker build -f deploy/Dockerfile",
        "kubectl apply -k deploy/kubernetes/overlays/sidecar",
        "kubectl apply -k deploy/kubernetes/overlays/ext-authz",
        "kubectl apply -k deploy/kubernetes/monitoring",
        "deploy/istio/mesh-config.yaml",
        "deploy/istio/authorization-policy.yaml",
        "scan_interval",
        "password_file",
        "benchmarks.md",
    ] {
        assert!(
            guide.contains(needed),
            "docs/deploying.md does not mention {needed}"
        );
    }
    let mut named = BTreeSet::new();
    for (i, _) in guide.match_indices("deploy/") {
        let preceded = guide[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '.');
        if preceded {
            continue;
        }
        let rest = &guide[i..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || "/._-".contains(c)))
            .unwrap_or(rest.len());
        named.insert(rest[..end].trim_end_matches(['.', '/']).to_string());
    }
    assert!(
        named.len() >= 5,
        "docs/deploying.md names few deploy/ files: {named:?}"
    );
    for path in &named {
        let full: PathBuf = root().join(path);
        assert!(
            full.exists(),
            "docs/deploying.md names {path}, which does not exist"
        );
    }
}
