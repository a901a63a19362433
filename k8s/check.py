#!/usr/bin/env python3
"""Policy checks on a rendered overlay that the Kubernetes schemas cannot make.

    python3 k8s/check.py --overlay NAME [--config-dir DIR] RENDERED.yaml

NAME selects the replica floors: overlays listed in NON_PRODUCTION may run
one replica; every other overlay is held to the production floors. Each
problem is printed with the object it concerns; the exit status is 1 when
there is any. scripts/k8s-validate runs this after schema validation.

The Keysilo configuration checks read the TOML each container actually
loads: the file KEYSILO_CONFIG names, found through the container's
ConfigMap mount, with the container's KEYSILO_<SECTION>__<KEY> variables
applied on top. Keys and values are not checked here: with --config-dir,
each distinct configuration is written to DIR for the services' own
`config validate` (scripts/k8s-validate runs it), one line per
configuration in DIR/manifest.tsv:

    SERVICE <TAB> N.toml <TAB> N.env <TAB> which containers load it

N.env holds the container's KEYSILO_<SECTION>__<KEY>=VALUE variables,
NUL-separated.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import tomllib
from typing import Any, Iterator, NamedTuple

import yaml

NON_PRODUCTION = {"dev"}

# Replica floors (Deployment replicas and HPA minReplicas) in production.
PRODUCTION_MIN_REPLICAS = {"keysilo-identity": 3, "keysilo-edge": 2}

UID = 10001
SECRET_MODE = 0o400

IDENTITY = "keysilo-identity"
EDGE = "keysilo-edge"
MIGRATE_JOB = "keysilo-identity-migrate"
IDENTITY_POD = {"app.kubernetes.io/name": IDENTITY, "app.kubernetes.io/component": "server"}
EDGE_POD = {"app.kubernetes.io/name": EDGE, "app.kubernetes.io/component": "server"}
UNRELATED_POD = {"app.kubernetes.io/name": "unrelated", "app.kubernetes.io/component": "server"}

# The keys each Secret is documented (k8s/README.md) to hold; a TOML
# reference to any other name would never resolve.
SECRET_KEYS = {
    "keysilo-identity-secrets": {
        "database-password",
        "redis-password",
        "admin-api-key",
        "edge-api-key",
        "client-secret-pepper",
        "master-key-v1",
    },
    "keysilo-edge-secrets": {"identity-api-key", "redis-password"},
}

SERVICES = (IDENTITY, EDGE)

# RFC 5737 documentation ranges: the base's address placeholders.
PLACEHOLDER_NETS = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]

SECRET_REF = re.compile(r"^\$\{secret:([A-Za-z0-9._-]+)\}$")


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, obj: str, message: str) -> None:
        # A ConfigMap shared by two workloads would otherwise report twice.
        problem = f"{obj}: {message}"
        if problem not in self.problems:
            self.problems.append(problem)

    def expect(self, ok: bool, obj: str, message: str) -> None:
        if not ok:
            self.fail(obj, message)


def ref(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector against a label set; `{}` matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Rendered:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        for d in self.of_kind(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def configmap(self, name: str) -> dict | None:
        return self.get("ConfigMap", name)

    def workloads(self) -> Iterator[tuple[dict, dict]]:
        """(object, pod template) for everything that runs pods."""
        for d in self.docs:
            kind = d.get("kind")
            if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
                yield d, d["spec"]["template"]
            elif kind == "CronJob":
                yield d, d["spec"]["jobTemplate"]["spec"]["template"]
            elif kind == "Pod":
                yield d, d


# --- configuration ---------------------------------------------------------


def env_override(table: dict, name: str, value: str) -> None:
    """Applies KEYSILO_<SECTION>__<KEY>=value the way keysilo-config does."""
    section, key = name[len("KEYSILO_"):].lower().split("__", 1)
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    table.setdefault(section, {})[key] = parsed


class Config(NamedTuple):
    """What a container loads."""

    table: dict  # the TOML with the overrides applied
    where: str  # ConfigMap/NAME
    key: str  # the ConfigMap key
    text: str  # the TOML as written
    overrides: list[tuple[str, str]]  # KEYSILO_<SECTION>__<KEY> variables


def container_config(
    rendered: Rendered, pod: dict, container: dict, report: Report, obj: str
) -> Config | None:
    """The effective configuration of a container and the ConfigMap it is in."""
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    overrides = [
        (name, value) for name, value in env.items()
        if name.startswith("KEYSILO_") and not name.startswith("KEYSILO_SECRET_")
        and "__" in name and value is not None
    ]
    path = env.get("KEYSILO_CONFIG")
    args = container.get("args") or []
    if "--config" in args:
        path = args[args.index("--config") + 1]
    if not path:
        report.fail(obj, "no KEYSILO_CONFIG (or --config): the service would run on defaults")
        return None
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"], {})
        if not path.startswith(prefix) or "configMap" not in volume:
            continue
        cm_name = volume["configMap"]["name"]
        key = path[len(prefix):]
        for item in volume["configMap"].get("items") or []:
            if item["path"] == key:
                key = item["key"]
        cm = rendered.configmap(cm_name)
        if cm is None or key not in (cm.get("data") or {}):
            report.fail(obj, f"{path} should come from ConfigMap {cm_name} key {key}, "
                        "which the overlay does not render")
            return None
        try:
            table = tomllib.loads(cm["data"][key])
        except tomllib.TOMLDecodeError as err:
            report.fail(f"ConfigMap/{cm_name}", f"{key} is not valid TOML: {err}")
            return None
        for name, value in overrides:
            env_override(table, name, value)
        return Config(table, f"ConfigMap/{cm_name}", key, cm["data"][key], overrides)
    report.fail(obj, f"KEYSILO_CONFIG={path} is not inside a ConfigMap mount")
    return None


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)


def under_mount(path: str, container: dict) -> bool:
    return any(
        path.startswith(m["mountPath"].rstrip("/") + "/") for m in container.get("volumeMounts") or []
    )


def check_config(
    service: str,
    table: dict,
    where: str,
    obj: str,
    container: dict,
    secret_source: str | None,
    report: Report,
) -> None:
    for text in walk_strings(table):
        if ".invalid" in text:
            report.fail(where, f"placeholder left from k8s/base: {text!r}")
    # Secrets: file provider only, references to keys the Secret holds.
    secrets = table.get("secrets") or {}
    report.expect(
        secrets.get("providers") == ["file"],
        where,
        'secrets.providers must be ["file"] (no secret in the environment)',
    )
    expected = SECRET_KEYS.get(secret_source or "", set())
    for text in walk_strings(table):
        match = SECRET_REF.match(text)
        if match and match.group(1) not in expected:
            report.fail(where, f"${{secret:{match.group(1)}}} is not a key of "
                        f"Secret {secret_source} as documented in k8s/README.md")
    # Every file the configuration names must be mounted.
    paths = []
    tls = table.get("tls") or {}
    if tls.get("enabled"):
        paths += [tls.get("cert_file", ""), tls.get("key_file", "")]
        paths += tls.get("client_ca_files") or []
        report.expect(tls.get("client_auth") != "require", where,
                      'tls.client_auth = "require" fails the kubelet probes (they present no certificate)')
    if service == IDENTITY:
        database = table.get("database") or {}
        report.expect(database.get("ssl_mode") == "require", obj,
                      f'database.ssl_mode must be "require" (is {database.get("ssl_mode")!r})')
        report.expect(database.get("migrate_on_start") is False, obj,
                      "database.migrate_on_start must be false: the migration Job migrates")
        if database.get("ca_file"):
            paths.append(database["ca_file"])
    else:
        edge = table.get("edge") or {}
        if edge.get("identity_ca_file"):
            paths.append(edge["identity_ca_file"])
    for path in paths:
        report.expect(bool(path) and under_mount(path, container), obj,
                      f"{path!r} (from {where}) is not under any volume mount")


# --- pods --------------------------------------------------------------------


def effective(pod_sc: dict, sc: dict, key: str) -> Any:
    return sc[key] if key in sc else pod_sc.get(key)


def check_pod(
    rendered: Rendered, obj_doc: dict, pod: dict, report: Report, loads: dict
) -> None:
    obj = ref(obj_doc)
    spec = pod["spec"]
    report.expect(spec.get("automountServiceAccountToken") is False, obj,
                  "automountServiceAccountToken must be false")
    sa_name = spec.get("serviceAccountName")
    sa = rendered.get("ServiceAccount", sa_name) if sa_name else None
    report.expect(sa is not None, obj, f"ServiceAccount {sa_name!r} is not in the overlay")
    if sa is not None:
        report.expect(sa.get("automountServiceAccountToken") is False, ref(sa),
                      "automountServiceAccountToken must be false")
    pod_sc = spec.get("securityContext") or {}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}

    for name, volume in volumes.items():
        secret = volume.get("secret")
        if secret is None:
            continue
        report.expect(secret.get("defaultMode") == SECRET_MODE, obj,
                      f"secret volume {name}: defaultMode must be 0400 (256), "
                      f"is {secret.get('defaultMode')!r}")
        for item in secret.get("items") or []:
            if "mode" in item:
                report.expect(item["mode"] == SECRET_MODE, obj,
                              f"secret volume {name}: item {item['key']} mode must be 0400")

    init = spec.get("initContainers") or []
    main = spec.get("containers") or []
    staged_secret_volumes = set()
    staging_dirs = set()
    for c in init:
        mounted = {m["name"] for m in c.get("volumeMounts") or []}
        secret_in = {n for n in mounted if "secret" in volumes.get(n, {})}
        if secret_in:
            staged_secret_volumes |= secret_in
            staging_dirs |= {n for n in mounted if "emptyDir" in volumes.get(n, {})}

    for c in init + main:
        where = f"{obj}: container {c['name']}"
        sc = c.get("securityContext") or {}
        report.expect(effective(pod_sc, sc, "runAsNonRoot") is True, where, "runAsNonRoot must be true")
        report.expect(effective(pod_sc, sc, "runAsUser") == UID, where, f"runAsUser must be {UID}")
        report.expect(effective(pod_sc, sc, "runAsGroup") == UID, where, f"runAsGroup must be {UID}")
        report.expect(sc.get("allowPrivilegeEscalation") is False, where,
                      "allowPrivilegeEscalation must be false")
        report.expect(sc.get("readOnlyRootFilesystem") is True, where,
                      "readOnlyRootFilesystem must be true")
        report.expect(sc.get("privileged") is not True, where, "must not be privileged")
        caps = sc.get("capabilities") or {}
        report.expect("ALL" in (caps.get("drop") or []), where, "capabilities.drop must contain ALL")
        report.expect(not caps.get("add"), where, "capabilities.add must be empty")
        seccomp = (effective(pod_sc, sc, "seccompProfile") or {}).get("type")
        report.expect(seccomp == "RuntimeDefault", where, "seccompProfile must be RuntimeDefault")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                report.expect(res in (resources.get(kind) or {}), where, f"resources.{kind}.{res} missing")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        report.expect(bool(tag) and tag != "latest" or "@sha256:" in image, where,
                      f"image {image!r} must name a tag other than latest")

    for c in main:
        where = f"{obj}: container {c['name']}"
        for m in c.get("volumeMounts") or []:
            volume = volumes.get(m["name"], {})
            if "secret" in volume or m["name"] in staging_dirs:
                report.expect(m.get("readOnly") is True, where, f"mount {m['mountPath']} must be readOnly")
                report.expect("subPath" not in m and "subPathExpr" not in m, where,
                              f"mount {m['mountPath']}: no subPath (renewed files would never appear)")
            if m["name"] in staged_secret_volumes:
                report.fail(where, f"mounts secret volume {m['name']} directly: its files are "
                            "group-readable under fsGroup; mount the staged copy")
        service = (c.get("command") or [""])[0]
        if service not in SERVICES:
            report.fail(where, f"command {c.get('command')!r} is neither {IDENTITY} nor {EDGE}")
            continue
        secret_source = None
        for n in staged_secret_volumes:
            secret_source = volumes[n]["secret"]["secretName"]
        found = container_config(rendered, pod, c, report, where)
        if found is None:
            continue
        table, cm_where = found.table, found.where
        loads.setdefault((service, found.text, tuple(found.overrides)), []).append(
            f"{where} ({cm_where} key {found.key})"
        )
        check_config(service, table, cm_where, where, c, secret_source, report)
        file_dir = (table.get("secrets") or {}).get("file_dir")
        if not file_dir:
            report.fail(where, "secrets.file_dir must be set (the file provider reads the staged secrets)")
            continue
        staged = [
            m for m in c.get("volumeMounts") or []
            if m["mountPath"].rstrip("/") == str(file_dir).rstrip("/")
        ]
        if not staged:
            report.fail(where, f"nothing is mounted at secrets.file_dir {file_dir!r}")
        else:
            volume = volumes.get(staged[0]["name"], {})
            report.expect((volume.get("emptyDir") or {}).get("medium") == "Memory", where,
                          f"{file_dir} must be an emptyDir with medium: Memory")
            report.expect(staged[0]["name"] in staging_dirs, where,
                          f"{file_dir} is not filled by an init container from a Secret")
        if obj_doc["kind"] == "Deployment":
            check_probes(c, table, service, where, report)


def check_probes(c: dict, table: dict, service: str, where: str, report: Report) -> None:
    section = "server" if service == IDENTITY else "edge"
    port = (table.get(section) or {}).get("port", 8080 if service == IDENTITY else 8081)
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    report.expect(port in ports.values(), where, f"no containerPort {port} ({section}.port)")
    tls_on = bool((table.get("tls") or {}).get("enabled"))
    for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = c.get(probe_name)
        if not probe:
            report.fail(where, f"{probe_name} missing")
            continue
        get = probe.get("httpGet") or {}
        report.expect(get.get("path") == path, where, f"{probe_name} must GET {path}")
        scheme = get.get("scheme", "HTTP")
        report.expect(scheme == ("HTTPS" if tls_on else "HTTP"), where,
                      f"{probe_name} scheme {scheme} does not match tls.enabled = {str(tls_on).lower()}")
        probe_port = ports.get(get.get("port"), get.get("port"))
        report.expect(probe_port == port, where, f"{probe_name} port is not {section}.port {port}")


# --- objects -------------------------------------------------------------------


def check_replicas(rendered: Rendered, overlay: str, report: Report) -> None:
    production = overlay not in NON_PRODUCTION
    for name in (IDENTITY, EDGE):
        floor = PRODUCTION_MIN_REPLICAS[name] if production else 1
        deployment = rendered.get("Deployment", name)
        if deployment is None:
            report.fail(f"Deployment/{name}", "missing")
            continue
        replicas = deployment["spec"].get("replicas", 1)
        report.expect(replicas >= floor, ref(deployment), f"replicas {replicas} < {floor}")
        hpas = [
            h for h in rendered.of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
            and h["spec"]["scaleTargetRef"].get("name") == name
        ]
        if not hpas:
            report.fail(ref(deployment), "no HorizontalPodAutoscaler targets it")
        for hpa in hpas:
            report.expect(hpa["apiVersion"] == "autoscaling/v2", ref(hpa), "must be autoscaling/v2")
            low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
            report.expect(low >= floor, ref(hpa), f"minReplicas {low} < {floor}")
            report.expect(low <= high, ref(hpa), f"minReplicas {low} > maxReplicas {high}")
            report.expect(replicas <= high, ref(hpa), f"Deployment replicas {replicas} > maxReplicas {high}")
            cpu = [
                m for m in hpa["spec"].get("metrics") or []
                if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
            ]
            report.expect(bool(cpu), ref(hpa), "no CPU metric")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdbs = [
            p for p in rendered.of_kind("PodDisruptionBudget")
            if selector_matches(p["spec"].get("selector"), labels)
        ]
        report.expect(bool(pdbs), ref(deployment), "no PodDisruptionBudget selects its pods")
        fewest = min([replicas] + [h["spec"].get("minReplicas", 1) for h in hpas])
        for pdb in pdbs:
            report.expect(pdb["apiVersion"] == "policy/v1", ref(pdb), "must be policy/v1")
            min_available = pdb["spec"].get("minAvailable")
            if isinstance(min_available, int):
                report.expect(min_available < fewest, ref(pdb),
                              f"minAvailable {min_available} leaves no pod evictable at {fewest} "
                              "replica(s): node drains would block")
        services = [
            s for s in rendered.of_kind("Service")
            if s["spec"].get("selector") and selector_matches({"matchLabels": s["spec"]["selector"]}, labels)
        ]
        report.expect(bool(services), ref(deployment), "no Service selects its pods")


def peers_to(policies: list[dict], direction: str, labels: dict) -> list[tuple[dict, dict, list]]:
    """(policy, peer, ports) for every peer allowed in `direction` for pods with `labels`."""
    out = []
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        spec = policy["spec"]
        if direction not in spec.get("policyTypes", []) or not selector_matches(spec["podSelector"], labels):
            continue
        for rule in spec.get(key) or []:
            for peer in rule.get(peers_key) or [{}]:
                out.append((policy, peer, rule.get("ports") or []))
    return out


def is_placeholder(cidr: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version == 4 and any(net.subnet_of(n) for n in PLACEHOLDER_NETS)


def port_numbers(ports: list) -> set:
    return {p.get("port") for p in ports}


def check_network(rendered: Rendered, identity_port: int, report: Report) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not policies:
        report.fail("NetworkPolicy", "none in the overlay")
        return
    for policy in policies:
        for rule in (policy["spec"].get("egress") or []) + (policy["spec"].get("ingress") or []):
            for peer in (rule.get("to") or []) + (rule.get("from") or []):
                cidr = (peer.get("ipBlock") or {}).get("cidr")
                if cidr and is_placeholder(cidr):
                    report.fail(ref(policy), f"ipBlock {cidr} is the base's placeholder: "
                                "set the real address in the overlay")
    for obj, pod in rendered.workloads():
        labels = pod["metadata"].get("labels") or {}
        deny = [
            p for p in policies
            if selector_matches(p["spec"]["podSelector"], labels)
            and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", []))
            and not p["spec"].get("ingress") and not p["spec"].get("egress")
        ]
        report.expect(bool(deny), ref(obj),
                      "no default-deny (Ingress and Egress) NetworkPolicy selects its pods")
        dns = [e for e in peers_to(policies, "Egress", labels) if 53 in port_numbers(e[2])]
        report.expect(bool(dns), ref(obj), "no egress to DNS (port 53)")
        postgres = [e for e in peers_to(policies, "Egress", labels) if 5432 in port_numbers(e[2])]
        is_identity = labels.get("app.kubernetes.io/name") == IDENTITY
        if is_identity:
            report.expect(bool(postgres), ref(obj), "no egress to PostgreSQL (5432)")
        else:
            for policy, _, _ in postgres:
                report.fail(ref(policy), f"lets {ref(obj)} reach PostgreSQL: only identity pods may")
        if labels.get("app.kubernetes.io/component") == "server":
            redis = [e for e in peers_to(policies, "Egress", labels) if 6379 in port_numbers(e[2])]
            report.expect(bool(redis), ref(obj), "no egress to Redis (6379)")

    from_edge = False
    for policy, peer, ports in peers_to(policies, "Ingress", IDENTITY_POD):
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if pod_sel is not None and ns_sel is None:
            # Same namespace: the edge pods and nothing else.
            if selector_matches(pod_sel, EDGE_POD) and not selector_matches(pod_sel, UNRELATED_POD):
                from_edge = True
            else:
                report.fail(ref(policy), f"admits pods {pod_sel} to identity: only the edge may")
        elif ns_sel and pod_sel is None and (ns_sel.get("matchLabels") or ns_sel.get("matchExpressions")):
            pass  # one selected namespace: the ingress controller's
        else:
            report.fail(ref(policy), f"admits {peer or 'everyone'} to identity: only the edge "
                        "and the ingress controller's namespace may reach it")
        report.expect(bool(ports) and port_numbers(ports) <= {identity_port, "https"}, ref(policy),
                      f"identity ingress must be limited to port {identity_port}")
    report.expect(from_edge, "NetworkPolicy", "no policy lets the edge pods reach identity")
    edge_to_identity = [
        e for e in peers_to(policies, "Egress", EDGE_POD)
        if e[1].get("podSelector") is not None and selector_matches(e[1]["podSelector"], IDENTITY_POD)
        and port_numbers(e[2]) & {identity_port, "https"}
    ]
    report.expect(bool(edge_to_identity), "NetworkPolicy",
                  f"no policy lets the edge egress to identity:{identity_port}")


def identity_port(rendered: Rendered) -> int:
    deployment = rendered.get("Deployment", IDENTITY)
    if deployment is not None:
        pod = deployment["spec"]["template"]
        found = container_config(rendered, pod, pod["spec"]["containers"][0], Report(), "")
        if found is not None:
            return (found[0].get("server") or {}).get("port", 8080)
    return 8080


def check_cross_config(rendered: Rendered, report: Report) -> None:
    """Identity and edge must agree on issuer, Redis prefix and the identity URL."""
    tables: dict[str, dict] = {}
    namespace = None
    for name in (IDENTITY, EDGE):
        deployment = rendered.get("Deployment", name)
        if deployment is None:
            return
        namespace = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]
        found = container_config(rendered, pod, pod["spec"]["containers"][0], Report(), "")
        if found is None:
            return
        tables[name] = found[0]
    identity, edge = tables[IDENTITY], tables[EDGE]
    where = f"Deployment/{EDGE} configuration"
    public = (identity.get("server") or {}).get("public_base_url", "").rstrip("/")
    report.expect((edge.get("edge") or {}).get("issuer_base", "").rstrip("/") == public, where,
                  f"edge.issuer_base must equal identity's server.public_base_url {public!r}")
    report.expect((edge.get("redis") or {}).get("key_prefix", "keysilo:")
                  == (identity.get("redis") or {}).get("key_prefix", "keysilo:"), where,
                  "redis.key_prefix differs from identity's: revocation events would not arrive")
    port = (identity.get("server") or {}).get("port", 8080)
    scheme = "https" if (identity.get("tls") or {}).get("enabled") else "http"
    wanted = f"{scheme}://{IDENTITY}.{namespace}.svc:{port}"
    report.expect((edge.get("edge") or {}).get("identity_url", "").rstrip("/") == wanted, where,
                  f"edge.identity_url must be {wanted} (the identity Service in this namespace)")


def write_loads(loads: dict, directory: str) -> None:
    """Writes what each container loads for `config validate` (see the docstring)."""
    lines = []
    for n, ((service, text, overrides), users) in enumerate(loads.items(), 1):
        toml_path = os.path.join(directory, f"{n}.toml")
        env_path = os.path.join(directory, f"{n}.env")
        with open(toml_path, "w", encoding="utf-8") as f:
            f.write(text)
        with open(env_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}={value}\0" for name, value in overrides))
        what = "; ".join(users).replace("\t", " ").replace("\n", " ")
        lines.append(f"{service}\t{toml_path}\t{env_path}\t{what}\n")
    with open(os.path.join(directory, "manifest.tsv"), "w", encoding="utf-8") as f:
        f.writelines(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", required=True, help="overlay name (selects replica floors)")
    parser.add_argument("--config-dir", help="write each container's configuration here "
                        "for `config validate` (an existing directory)")
    parser.add_argument("rendered", help="output of kubectl kustomize for that overlay")
    args = parser.parse_args()
    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    rendered = Rendered(docs)
    report = Report()

    for doc in docs:
        report.expect(doc.get("kind") != "Secret", ref(doc),
                      "Secrets are created out of band (k8s/README.md), never rendered")
    namespaces = {d["metadata"].get("namespace") for d in docs if d.get("kind") not in ("Namespace",)}
    report.expect(len(namespaces) == 1 and None not in namespaces, "overlay",
                  f"every object must be in one namespace (found {sorted(map(str, namespaces))})")
    report.expect(rendered.get("Job", MIGRATE_JOB) is not None, f"Job/{MIGRATE_JOB}", "missing")
    job = rendered.get("Job", MIGRATE_JOB)
    if job is not None:
        spec = job["spec"]
        report.expect("backoffLimit" in spec, ref(job), "backoffLimit must be set")
        report.expect("ttlSecondsAfterFinished" in spec, ref(job), "ttlSecondsAfterFinished must be set")
        containers = spec["template"]["spec"]["containers"]
        report.expect(any((c.get("command") or [None])[0] == IDENTITY and "migrate" in (c.get("args") or [])
                          for c in containers), ref(job), f"must run `{IDENTITY} migrate`")
    check_replicas(rendered, args.overlay, report)
    loads: dict[tuple[str, str, tuple], list[str]] = {}
    for obj, pod in rendered.workloads():
        check_pod(rendered, obj, pod, report, loads)
    if args.config_dir:
        write_loads(loads, args.config_dir)
    check_network(rendered, identity_port(rendered), report)
    check_cross_config(rendered, report)

    if report.problems:
        for problem in report.problems:
            print(f"check.py: {args.overlay}: {problem}", file=sys.stderr)
        print(f"check.py: {args.overlay}: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check.py: {args.overlay}: {len(docs)} objects, all policy checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
