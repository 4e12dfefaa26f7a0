"""deploy/systemd: the unit passes `systemd-analyze verify` and `systemd-analyze security --offline`,
reload is SIGHUP, stop is a SIGTERM drain that fits TimeoutStopSec, and the sysusers file makes the user."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, REPO_ROOT, run, seconds, tool

from proxy.config import load_config

UNIT = DEPLOY / "systemd" / "dbproxy.service"
SYSUSERS = DEPLOY / "systemd" / "dbproxy.sysusers"
INSTALLED_BINARY = "/opt/dbproxy/bin/dbproxy"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (apt install systemd)")


def unit_here(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart binary exists on this machine (verify checks it is executable)."""
    dbproxy = tool("dbproxy")
    assert dbproxy is not None, "the dbproxy console script of this virtualenv"
    path = tmp_path / "dbproxy.service"
    path.write_text((UNIT.read_text() if text is None else text).replace(INSTALLED_BINARY, dbproxy))
    return path


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    # repeated keys add up in systemd (SystemCallFilter=...): keep every value, in order
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@needs_systemd
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    proc = run([SYSTEMD_ANALYZE, "verify", str(unit_here(tmp_path))], timeout=30)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    # the same check reports a misspelt setting (verify exits 0 on those: the output is what counts)
    broken = unit_here(tmp_path, UNIT.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    proc = run([SYSTEMD_ANALYZE, "verify", str(broken)], timeout=30)
    assert "ProtectHom" in proc.stdout + proc.stderr


@needs_systemd
def test_unit_hardening_exposure_is_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    path = unit_here(tmp_path)
    proc = run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(path)], timeout=30)
    assert proc.returncode == 0, proc.stdout[-2000:]   # overall exposure 2.0 or less ("OK")
    assert "Overall exposure level for dbproxy.service: 1." in proc.stdout


def test_unit_reload_stop_limits_and_user() -> None:
    service = service_section()
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} run --config /etc/dbproxy/dbproxy.toml"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    # the drain (shutdown_timeout, default 30 s as in the example config) ends before systemd's SIGKILL
    example = load_config(str(REPO_ROOT / "config" / "dbproxy.example.toml"))
    assert seconds(service["TimeoutStopSec"][0]) > example.server.shutdown_timeout == 30.0
    assert service["RestartPreventExitStatus"] == ["2"]    # a bad config: restarting cannot help
    assert int(service["LimitNOFILE"][0]) >= 10_000 + 1_000
    assert service["User"] == ["dbproxy"] and service["Group"] == ["dbproxy"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")):
        assert service[key] == [value], key
    assert service["EnvironmentFile"] == ["-/etc/dbproxy/dbproxy.env"]


@needs_systemd
def test_sysusers_file_creates_the_service_user(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    assert sysusers is not None
    (tmp_path / "etc").mkdir()
    proc = run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], timeout=30)
    assert proc.returncode == 0, proc.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    (entry,) = [line for line in passwd.splitlines() if line.startswith("dbproxy:")]
    name, _, uid, gid, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/nonexistent" and shell == "/usr/sbin/nologin"
    assert any(line.startswith(f"dbproxy:x:{gid}:") for line in (tmp_path / "etc" / "group").read_text().splitlines())
