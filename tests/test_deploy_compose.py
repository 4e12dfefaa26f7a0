"""deploy/compose.yaml without a container engine: the Compose Specification schema (the copy
check-jsonschema ships), then cross-checks: services named by depends_on, the mounted files, the
published ports, the dbproxy configuration it mounts (validated by proxy.config with the environment
compose gives the container), Prometheus' target and Grafana's provisioning."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from deploy_helpers import (
    DEPLOY,
    HTTP_PATHS,
    REPO_ROOT,
    listen_ports,
    metric_label_names,
    parse_dbproxy_config,
    password_envs,
    seconds,
)

COMPOSE = DEPLOY / "compose.yaml"
DBPROXY_CONFIG = "/etc/dbproxy/dbproxy.toml"


def compose_schema() -> dict[str, Any]:
    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(schema_file.read_text())
    return schema


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with VAR unset: the default (the values a plain `up` runs with)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the service's bind mounts (short syntax, relative to deploy/)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE.parent / source).resolve(), target))
    return mounts


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in service.get("environment", {}).items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port; every published port binds 127.0.0.1."""
    ports = {}
    for spec in service.get("ports", []):
        host_ip, host, container = spec.split(":")
        assert host_ip == "127.0.0.1", spec
        ports[int(container)] = int(host)
    return ports


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors
    broken = json.loads(json.dumps(compose))
    broken["services"]["dbproxy"]["stop_grace_perod"] = "35s"   # the schema check can fail
    assert any("stop_grace_perod" in e.message for e in validator.iter_errors(broken))


def test_services_references_and_mounted_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"pg-primary", "pg-replica", "mariadb-primary", "mariadb-replica", "redis",
                             "dbproxy", "prometheus", "grafana"}
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for host_path, _ in bind_mounts(service):
            assert host_path.exists(), f"{name} mounts missing {host_path}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    host_ports = [host for service in services.values() for host in published(service).values()]
    assert len(host_ports) == len(set(host_ports)), "a host port is published twice"
    build = services["dbproxy"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO_ROOT and (context / build["dockerfile"]).is_file()
    assert (context / ".dockerignore").is_file()
    scripts = [p for s in services.values() for p, _ in bind_mounts(s) if p.suffix == ".sh"]
    assert scripts and all(p.stat().st_mode & 0o111 for p in scripts), "entrypoint scripts are executable"


def test_dbproxy_service_config_env_ports_and_targets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dbproxy = services["dbproxy"]
    (config_path,) = [host for host, target in bind_mounts(dbproxy) if target == DBPROXY_CONFIG]
    text = config_path.read_text()
    env = environment(dbproxy)
    assert password_envs(text) <= set(env), "every password_env is set on the dbproxy service"
    config = parse_dbproxy_config(text, env, str(config_path))
    ports = published(dbproxy)
    assert listen_ports(config) == set(ports), "every listener is published, nothing else"
    assert config.server.http_listen is not None
    assert env["DBPROXY_HEALTH_URL"] == f"http://127.0.0.1:{config.server.http_listen.port}/healthz"
    assert "/healthz" in HTTP_PATHS
    # SIGKILL must not cut the drain short
    assert seconds(dbproxy["stop_grace_period"]) > config.server.shutdown_timeout
    for cluster in config.clusters:
        assert cluster.failover.mode == "follow"
        for instance in cluster.instances:
            assert instance.host in services, f"{cluster.name}: {instance} is no compose service"
            expected_port = 5432 if cluster.engine == "postgres" else 3306
            assert instance.port == expected_port
        if cluster.cache is not None:
            assert urlsplit(cluster.cache.backend).hostname in services
        assert all(e.listen.host == "0.0.0.0" for e in cluster.endpoints)
        if cluster.engine == "mysql":   # the probe login is made on the primary, with the same password
            health_env = re.search(r'\[clusters\.' + cluster.name + r'\.health\][^\[]*password_env\s*=\s*"(\w+)"', text)
            assert health_env is not None
            primary = environment(services[cluster.instances[0].host])
            assert primary[health_env.group(1)] == env[health_env.group(1)]
    # the database logins dbproxy uses exist on the servers with those passwords
    users = {u.name: u for u in config.users}
    pg = environment(services["pg-primary"])
    assert users[pg["POSTGRES_USER"]].server_password == pg["POSTGRES_PASSWORD"]
    maria = environment(services["mariadb-primary"])
    assert users["shop"].server_user == maria["MARIADB_USER"]
    assert users["shop"].server_password == maria["MARIADB_PASSWORD"]
    replica = environment(services["mariadb-replica"])
    assert replica["MARIADB_MASTER_HOST"] == "mariadb-primary"
    assert replica["MARIADB_REPLICATION_PASSWORD"] == maria["MARIADB_REPLICATION_PASSWORD"]
    assert "--read-only" in services["mariadb-replica"]["command"]


def test_prometheus_scrapes_dbproxy_and_grafana_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dbproxy_mounts = dict((t, h) for h, t in bind_mounts(services["dbproxy"]))
    config = parse_dbproxy_config(dbproxy_mounts[DBPROXY_CONFIG].read_text(), environment(services["dbproxy"]),
                                  "dbproxy.toml")
    assert config.server.http_listen is not None
    prometheus_mounts = {t: h for h, t in bind_mounts(services["prometheus"])}
    prometheus = yaml.safe_load(prometheus_mounts["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and "/metrics" in HTTP_PATHS
    # dbproxy's own `instance` label (the database instance) must survive the scrape
    assert "instance" in metric_label_names() and job["honor_labels"] is True
    assert job["static_configs"][0]["targets"] == [f"dbproxy:{config.server.http_listen.port}"]

    grafana_mounts = {t: h for h, t in bind_mounts(services["grafana"])}
    datasources = yaml.safe_load((grafana_mounts["/etc/grafana/provisioning/datasources"]
                                  / "prometheus.yaml").read_text())["datasources"]
    (source,) = datasources
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert urlsplit(source["url"]).hostname == "prometheus"
    providers = yaml.safe_load((grafana_mounts["/etc/grafana/provisioning/dashboards"]
                                / "dbproxy.yaml").read_text())["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    dashboards = {t: h for t, h in grafana_mounts.items() if t.startswith(dashboard_dir + "/")}
    assert dashboards and all(h == DEPLOY / "grafana-dashboard.json" for h in dashboards.values())
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    # the dashboard reaches the provisioned source through its datasource variable (type prometheus)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards
