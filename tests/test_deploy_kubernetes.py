"""deploy/kubernetes: every manifest against the Kubernetes OpenAPI schema (kubernetes-validate, offline,
strict), the Kustomize overlays rendered by `kubectl kustomize`, and cross-checks between the objects
(selectors, ports, probes, grace periods) and the dbproxy configuration they carry."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_helpers import (
    HTTP_PATHS,
    KUBERNETES,
    listen_ports,
    metric_label_names,
    parse_dbproxy_config,
    password_envs,
    tool,
    yaml_documents,
)

from proxy.config import Config

# Native sidecars (initContainers with restartPolicy: Always) are on by default from 1.29.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
OVERLAYS = ("base", "overlays/staging", "overlays/production")
SIDECAR_FILES = sorted((KUBERNETES / "sidecar").glob("*.yaml"))


def _kubectl_with_kustomize() -> str | None:
    """kubectl whose built-in kustomize is v4 or newer (the `labels` and `replicas` fields)."""
    kubectl = tool("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    return kubectl if match and int(match.group(1)) >= 4 else None


KUBECTL = _kubectl_with_kustomize()
needs_kustomize = pytest.mark.skipif(KUBECTL is None, reason="needs kubectl with kustomize v4+ on PATH")


@functools.cache
def render(overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` output (once per overlay; callers do not modify it)."""
    assert KUBECTL is not None
    proc = subprocess.run([KUBECTL, "kustomize", str(KUBERNETES / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return yaml_documents(proc.stdout)


def validate(doc: dict[str, Any], where: str) -> None:
    """Strict schema validation for core kinds; the ServiceMonitor CRD has no schema offline, so its
    shape is checked by hand (check_service_monitor)."""
    if doc["kind"] == "ServiceMonitor":
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", where
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} against {version}: {exc.message}")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def dbproxy_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        if container["name"] == "dbproxy":
            return container
    raise AssertionError("no container named dbproxy")


def config_of(docs: list[dict[str, Any]], pod_spec: dict[str, Any], secret_keys: set[str]) -> Config:
    """The dbproxy.toml of the ConfigMap the dbproxy container mounts, validated with the Secret's keys
    as its environment (what envFrom gives the container)."""
    container = dbproxy_container(pod_spec)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/dbproxy")
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    config_map = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    text = config_map["data"]["dbproxy.toml"]
    assert container["args"] == ["run", "--config", "/etc/dbproxy/dbproxy.toml"]
    missing = password_envs(text) - secret_keys
    assert not missing, f"password_env names no key of the Secret: {missing}"
    return parse_dbproxy_config(text, {key: "x" * 32 for key in secret_keys}, "dbproxy.toml")


def secret_keys_from(container: dict[str, Any], docs: list[dict[str, Any]], external: set[str]) -> set[str]:
    """Keys of the Secret the container's envFrom names: from the rendered docs, else `external`
    (a Secret created out of band, as the production overlay documents)."""
    names = [source["secretRef"]["name"] for source in container.get("envFrom", [])]
    assert names, "dbproxy gets its passwords through envFrom a Secret"
    keys: set[str] = set()
    for secret in by_kind(docs, "Secret"):
        if secret["metadata"]["name"] in names:
            keys |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
    return keys or external


def check_probes_and_drain(pod_spec: dict[str, Any], config: Config) -> None:
    container = dbproxy_container(pod_spec)
    assert config.server.http_listen is not None and config.server.http_listen.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in HTTP_PATHS
        assert ports[get["port"]] == config.server.http_listen.port
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # SIGKILL must not cut the drain short: grace > preStop + shutdown_timeout
    assert pod_spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + config.server.shutdown_timeout
    security = container.get("securityContext", {})
    user = security.get("runAsUser", pod_spec.get("securityContext", {}).get("runAsUser"))
    assert user == 10001, "the image's dbproxy user"
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True


# ---- schema -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SIDECAR_FILES, ids=lambda p: p.name)
def test_sidecar_manifests_match_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml_documents(path.read_text()):
        validate(doc, str(path))


def test_schema_validation_rejects_a_wrong_field() -> None:
    """The validator used above does fail on a bad manifest (a misspelt probe field)."""
    doc = yaml_documents((KUBERNETES / "sidecar" / "deployment.yaml").read_text())[0]
    dbproxy_container(doc["spec"]["template"]["spec"])["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_matches_the_kubernetes_schema(overlay: str) -> None:
    docs = render(overlay)
    assert {doc["kind"] for doc in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor",
                                             "ConfigMap", "ServiceAccount"}
    for doc in docs:
        validate(doc, overlay)


# ---- cross-checks -----------------------------------------------------------------------------------

def test_sidecar_pod_wires_config_secret_probes_and_drain() -> None:
    docs = [doc for path in SIDECAR_FILES for doc in yaml_documents(path.read_text())]
    deployment = one(docs, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    sidecar = dbproxy_container(pod_spec)
    assert sidecar in pod_spec["initContainers"] and sidecar["restartPolicy"] == "Always"
    secret = one(docs, "Secret")
    config = config_of(docs, pod_spec, secret_keys_from(sidecar, docs, set()))
    check_probes_and_drain(pod_spec, config)
    app = next(c for c in pod_spec["containers"] if c["name"] == "app")
    url = next(e["value"] for e in app["env"] if e["name"] == "DATABASE_URL")
    port = int(re.search(r"@127\.0\.0\.1:(\d+)/", url).group(1))  # type: ignore[union-attr]
    endpoints = {e.listen.port: e for c in config.clusters for e in c.endpoints}
    assert endpoints[port].role == "writer" and endpoints[port].listen.host == "127.0.0.1"
    user = url.split("//")[1].split("@")[0]
    assert user in {u.name for u in config.users if not u.admin}
    assert next(e for e in app["env"] if e["name"] == "PGPASSWORD")["valueFrom"]["secretKeyRef"]["name"] \
        == secret["metadata"]["name"]


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_standalone_objects_select_each_other(overlay: str) -> None:
    docs = render(overlay)
    deployment, service = one(docs, "Deployment"), one(docs, "Service")
    pdb, monitor = one(docs, "PodDisruptionBudget"), one(docs, "ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(service["spec"]["selector"], pod_labels)
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"} <= HTTP_PATHS
    assert "instance" in metric_label_names()   # the database instance: kept, not renamed exported_instance
    assert all(e["honorLabels"] is True for e in monitor["spec"]["endpoints"])
    if overlay != "base":
        namespaces = {doc["metadata"].get("namespace") for doc in docs}
        assert len(namespaces) == 1 and None not in namespaces

    pod_spec = deployment["spec"]["template"]["spec"]
    container = dbproxy_container(pod_spec)
    keys = secret_keys_from(container, docs, {"DBPROXY_APP_PASSWORD", "DBPROXY_ADMIN_PASSWORD"})
    config = config_of(docs, pod_spec, keys)
    check_probes_and_drain(pod_spec, config)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert listen_ports(config) == set(container_ports.values())
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in container_ports
    for cluster in config.clusters:
        assert cluster.failover.mode == "follow", "a fleet must not promote on its own"
        assert cluster.cache is not None and cluster.cache.backend.startswith("redis://"), "one shared cache"
        assert all(e.listen.host == "0.0.0.0" for e in cluster.endpoints)


@needs_kustomize
def test_production_overlay_sizes_the_fleet() -> None:
    """The production overlay's arithmetic, as the README's fleet section states it: replicas x pooled
    users x max_server_connections, plus a probe connection per replica, per database instance."""
    docs = render("overlays/production")
    deployment = one(docs, "Deployment")
    replicas = deployment["spec"]["replicas"]
    pod_spec = deployment["spec"]["template"]["spec"]
    config = config_of(docs, pod_spec, {"DBPROXY_APP_PASSWORD", "DBPROXY_ADMIN_PASSWORD"})
    pooled_users = [u for u in config.users if not u.admin]
    per_instance = sum(replicas * len(pooled_users) * c.pool.max_server_connections + replicas
                       for c in config.clusters)
    assert replicas == 3
    assert per_instance == 3 * 1 * 25 + 3 <= 100 - 3   # PostgreSQL's default max_connections, reserved 3
    assert config.server.shutdown_timeout == 30.0
    spread = {c["topologyKey"] for c in pod_spec["topologySpreadConstraints"]}
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
