"""Command line: `dbproxy run | check-config | token | gen-cert | replay | demo | version` (argument parsing and dispatch)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy import __version__
from proxy.config import Config, ConfigError, load_config
from proxy.config.display import to_display

EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure
EXIT_CONFIG = 2  # bad configuration or usage (argparse also exits 2 on usage errors)
EXIT_INTERRUPTED = 130

DEMO_MODULE = "deploy.demo"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dbproxy` console script and `python -m proxy`; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    if command is _demo:
        args.demo_args = extra  # passed on to the demo script
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return command(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `dbproxy check-config f | head`: not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbproxy",
        description="Connection proxy and pooler for PostgreSQL and MySQL/MariaDB.",
        epilog="Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage.",
    )
    parser.add_argument("--version", action="version", version=f"dbproxy {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run in the foreground",
        description="Run in the foreground. SIGHUP reloads the config, SIGTERM drains then exits, "
        "a second SIGINT stops at once.",
    )
    run.add_argument("-c", "--config", metavar="FILE", required=True, help="TOML configuration file")
    run.set_defaults(command=_run)

    check = commands.add_parser(
        "check-config",
        help="validate a config file and print it resolved, secrets masked",
        description="Validate FILE and print the resolved configuration (defaults filled in, secrets masked). "
        "Exit 0 if valid, 2 with one line per problem if not.",
    )
    check.add_argument("file", metavar="FILE", help="TOML configuration file")
    check.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    check.add_argument("--connect", action="store_true",
                       help="also ask the servers: may each promote-mode health user promote and re-point?")
    check.set_defaults(command=_check_config)

    demo = commands.add_parser(
        "demo",
        help="start a local PostgreSQL primary + 2 replicas and the proxy (source checkout only)",
        description=f"Run `python -m {DEMO_MODULE}` from a source checkout; extra arguments are passed on.",
    )
    demo.set_defaults(command=_demo)

    gen_cert = commands.add_parser(
        "gen-cert",
        help="write a private CA and server and client certificates into DIR, for trying TLS out",
        description="Write ca.pem, server.pem / server-key.pem (localhost, 127.0.0.1, ::1, this host and any "
        "--name) and client.pem / client-key.pem (CN = --user) signed by a new CA (ca-key.pem). Not for production.",
    )
    gen_cert.add_argument("dir", metavar="DIR", help="directory to write into (made if missing)")
    gen_cert.add_argument("--name", action="append", default=[], help="another host name or address for the server")
    gen_cert.add_argument("--user", default="app", help="the client certificate's common name")
    gen_cert.add_argument("--days", type=int, default=365, help="validity in days")
    gen_cert.set_defaults(command=_gen_cert)

    token = commands.add_parser(
        "token",
        help="print a signed login token for a user (sent as the password, over TLS)",
        description="Print a token signed with [server.tokens]'s secret: the user sends it as its password "
        "(PostgreSQL: PGPASSWORD with sslmode=require; MySQL: mysql_clear_password over TLS).",
    )
    token.add_argument("-c", "--config", metavar="FILE", default=os.environ.get("DBPROXY_CONFIG"),
                       help="TOML configuration file (default: $DBPROXY_CONFIG)")
    token.add_argument("--user", required=True, help='a user with auth = "token" or "password_or_token"')
    token.add_argument("--ttl", default="15m", help="lifetime, at most [server.tokens] max_ttl (default 15m)")
    token.add_argument("--endpoint", default="*", metavar="NAME",
                       help="the only endpoint it is valid on (NAME or CLUSTER/NAME; default: any)")
    token.set_defaults(command=_token)

    replay = commands.add_parser(
        "replay",
        help="play a recording (RECORD START) back against a server or proxy",
        description="Replay FILE's client sessions with their recorded concurrency and pacing against HOST:PORT; "
        "print latency percentiles and errors. Password: --password or $DBPROXY_REPLAY_PASSWORD.",
    )
    replay.add_argument("file", metavar="FILE", help="a recording written by RECORD START")
    replay.add_argument("--target", required=True, metavar="HOST:PORT", help="where to replay (a server or a proxy)")
    replay.add_argument("--speed", type=float, default=1.0, help="time factor: 2.0 replays twice as fast (default 1)")
    replay.add_argument("--clients", type=int, default=None, metavar="N",
                        help="at most N sessions connected at once (default: the recording's peak)")
    replay.add_argument("--user", help="log in as USER (default: each session's recorded user)")
    replay.add_argument("--password", default=os.environ.get("DBPROXY_REPLAY_PASSWORD"))
    replay.add_argument("--database", help="use DATABASE (default: each session's recorded database)")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(command=_replay)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(command=_version)
    return parser


def _replay(args: argparse.Namespace) -> int:
    from proxy.recording.format import RecordingError
    from proxy.recording.replay import main as replay_main

    if args.speed <= 0 or (args.clients is not None and args.clients < 1):
        print("dbproxy replay: error: --speed must be positive and --clients at least 1", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = replay_main(args.file, args.target, args.speed, args.clients, args.user, args.password,
                             args.database, args.json, args.quiet)
    except (RecordingError, ValueError, OSError) as exc:
        print(f"dbproxy replay: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ValueError) else EXIT_FAILURE
    return EXIT_OK if report.errors == 0 else EXIT_FAILURE


def _gen_cert(args: argparse.Namespace) -> int:
    from proxy.tls.certs import generate

    out = generate(args.dir, args.name, args.user, args.days)
    print(f"wrote {out}/ca.pem, server.pem, server-key.pem, client.pem, client-key.pem (and ca-key.pem)")
    print(f'config:  tls = {{ mode = "require", cert = "{out}/server.pem", key = "{out}/server-key.pem" }}')
    print(f"connect: psql \"host=localhost port=6432 sslmode=verify-full sslrootcert={out}/ca.pem ...\"")
    return 0


def _token(args: argparse.Namespace) -> int:
    import time

    from proxy.durations import parse_duration
    from proxy.tokens import ANY_ENDPOINT, issue

    if not args.config:
        print("dbproxy token: error: give the configuration file (-c FILE or $DBPROXY_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    problem = None
    user = config.user(args.user)
    endpoints = {e.name for c in config.clusters for e in c.endpoints} | {
        f"{c.name}/{e.name}" for c in config.clusters for e in c.endpoints}
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        ttl, problem = 0.0, f"--ttl: {exc}"
    if config.server.tokens is None:
        problem = f"{args.config} has no [server.tokens] (secret_env or secret_file)"
    elif user is None:
        problem = f'no user "{args.user}" in {args.config}'
    elif user.auth == "password":
        problem = f'user "{args.user}" has auth = "password": give it auth = "token" or "password_or_token"'
    elif args.endpoint != ANY_ENDPOINT and args.endpoint not in endpoints:
        problem = f'no endpoint "{args.endpoint}" in {args.config} (one of: {", ".join(sorted(endpoints))})'
    if problem is None:
        assert config.server.tokens is not None
        try:
            print(issue(config.server.tokens, args.user, args.endpoint, ttl, time.time()))
            return EXIT_OK
        except ValueError as exc:
            problem = f"--ttl: {exc}"
    print(f"dbproxy token: error: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _load(path: str) -> Config | None:
    """Load the config, or print every problem to stderr and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from proxy.app import run  # lazily: the server pulls in uvloop, protocols, ...

    return run(config)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return EXIT_CONFIG
    if args.connect:
        from proxy.config.check import server_problems

        problems = server_problems(config)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            return EXIT_CONFIG
    display = to_display(config)
    if args.json:
        print(json.dumps(display, indent=2))
    else:
        print(f"# {args.file}: valid. Resolved configuration, defaults filled in, secrets masked.")
        print(render_toml(display), end="")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    if not Path("deploy", "demo.py").is_file():
        print(
            "dbproxy: error: the demo runs from a source checkout: "
            "cd to the dbproxy repository (where deploy/demo.py is) and run `dbproxy demo` there",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    process = subprocess.Popen([sys.executable, "-m", DEMO_MODULE, *args.demo_args])
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue  # the demo got the same SIGINT and shuts down: wait for it


def _version(args: argparse.Namespace) -> int:
    print(f"dbproxy {__version__}")
    return EXIT_OK


# --------------------------------------------------------------------------- TOML output

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INLINE_TABLES = frozenset({"tls", "server_tls"})


def render_toml(data: Mapping[str, Any]) -> str:
    """Render nested plain data (as from to_display) as TOML that tomllib reads back to the same data."""
    lines = _table_lines(data, ())
    return "\n".join(lines).lstrip("\n") + "\n"


def _table_lines(table: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping) and key not in _INLINE_TABLES:
            nested.append((key, value))
        elif _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        sub_path = (*path, key)
        header = ".".join(_key(part) for part in sub_path)
        if isinstance(value, Mapping):
            sub_lines = _table_lines(value, sub_path)
            if not value or (sub_lines and not sub_lines[0].startswith("\n")):
                lines.append(f"\n[{header}]")  # a header only where the table has keys of its own
            lines.extend(sub_lines)
        else:
            for item in value:
                lines.append(f"\n[[{header}]]")
                lines.extend(_table_lines(item, sub_path))
    return lines


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'
