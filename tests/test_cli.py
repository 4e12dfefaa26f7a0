"""Tests for the command line: `python -m proxy` as a subprocess, exit codes, output; TOML rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from proxy import __version__, cli
from proxy.config import Config, load_config, parse_config
from proxy.config.display import to_display

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "dbproxy.example.toml"

GOOD = """\
[[users]]
name = "app"
password = "very-secret"

[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432"]

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:6432"
role = "writer"
"""


def dbproxy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    text = GOOD.replace('role = "writer"', 'role = "master"').replace('engine = "postgres"', 'engine = "pg"')
    path.write_text(text + "\n[clusters.main.pool]\nmax_server_conection = 5\n")
    return path


def test_version() -> None:
    result = dbproxy("version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"dbproxy {__version__}\n", "")
    assert dbproxy("--version").stdout == f"dbproxy {__version__}\n"


def test_check_config_of_a_good_file(good_file: Path) -> None:
    result = dbproxy("check-config", str(good_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"# {good_file}: valid.")
    assert 'password = "********"' in result.stdout
    assert "very-secret" not in result.stdout
    assert "max_server_connections = 20" in result.stdout  # defaults are filled in
    assert tomllib.loads(result.stdout) == to_display(load_config(str(good_file)))


def test_check_config_json(good_file: Path) -> None:
    result = dbproxy("check-config", "--json", str(good_file))
    assert result.returncode == 0
    assert json.loads(result.stdout) == to_display(load_config(str(good_file)))


def test_check_config_of_the_example() -> None:
    result = dbproxy("check-config", "config/dbproxy.example.toml")
    assert result.returncode == 0, result.stderr
    assert "app-secret" not in result.stdout


def test_check_config_of_a_bad_file(bad_file: Path) -> None:
    result = dbproxy("check-config", str(bad_file))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f'config error: {bad_file}: clusters.main.engine: invalid value "pg": expected one of postgres | mysql',
        f"config error: {bad_file}: clusters.main.pool.max_server_conection: "
        "unknown key (did you mean max_server_connections?)",
        f"config error: {bad_file}: clusters.main.endpoints[0].role: "
        'invalid value "master": expected one of writer | reader | split | custom',
    ]


def test_check_config_of_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "semicolons.toml"
    path.write_text(
        GOOD + '[[clusters.main.endpoints]]\nname = "r"; listen = "127.0.0.1:6433"; role = "reader"\n'
    )
    result = dbproxy("check-config", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"config error: {path}: line 14, column 11: invalid TOML: ")
    assert "Traceback" not in result.stderr


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = dbproxy("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"config error: {tmp_path / 'nope.toml'}: cannot read file: No such file or directory\n"
    )


def test_run_with_a_bad_config(bad_file: Path) -> None:
    result = dbproxy("run", "--config", str(bad_file))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 3
    assert all(line.startswith("config error: ") for line in result.stderr.splitlines())


def test_check_config_accepts_a_mysql_cluster(tmp_path: Path) -> None:
    path = tmp_path / "mysql.toml"
    path.write_text(GOOD.replace('engine = "postgres"', 'engine = "mysql"')
                    .replace('client_auth = "scram-sha-256"', 'client_auth = "mysql_native_password"'))
    result = dbproxy("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'engine = "mysql"' in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("run",),
        ("check-config",),
        ("check-config", "a.toml", "b.toml"),
        ("version", "--bogus"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = dbproxy(*args)
    assert result.returncode == 2
    assert "usage: dbproxy" in result.stderr
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = dbproxy("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "demo", "version"):
        assert command in result.stdout


def test_demo_outside_a_checkout(tmp_path: Path) -> None:
    result = dbproxy("demo", cwd=tmp_path)
    assert result.returncode == 2
    assert "source checkout" in result.stderr


def test_demo_runs_deploy_demo_with_its_arguments(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "__init__.py").write_text("")
    (tmp_path / "deploy" / "demo.py").write_text("import sys\nprint('demo', sys.argv[1:])\nsys.exit(3)\n")
    result = dbproxy("demo", "--keep", "-v", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (3, "demo ['--keep', '-v']\n")


def test_run_hands_the_config_to_the_server(good_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []

    def run(config: Config) -> int:
        seen.append(config)
        return 0

    monkeypatch.setitem(sys.modules, "proxy.app", types.SimpleNamespace(run=run))
    assert cli.main(["run", "--config", str(good_file)]) == 0
    assert seen == [load_config(str(good_file))]


def test_render_toml_round_trips_the_display() -> None:
    config = load_config(str(EXAMPLE))
    display = to_display(config)
    text = cli.render_toml(display)
    assert tomllib.loads(text) == display
    # and the output is itself a valid config that resolves to the same display
    assert to_display(parse_config(text, str(EXAMPLE))) == display


def test_render_toml_escapes_strings() -> None:
    data = {"a key": 'quote " back \\ tab \t nl \n del \x7f é', "t": {"x": [1, 2.5, True]}}
    assert tomllib.loads(cli.render_toml(data)) == data
