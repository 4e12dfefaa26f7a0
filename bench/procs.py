"""Background processes for the benchmark: start, wait until they serve, stop, show their logs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deploy.pgcluster import accepts_tcp


class BenchError(RuntimeError):
    """Something the benchmark needs could not be set up or run (the message says what and shows logs)."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without inherited PG* variables (PGHOST, PGSSLMODE...), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def file_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path``, or why there are none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def text_tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_checked(
    argv: Sequence[str], what: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> str:
    """Run ``argv`` to completion; its stdout, or BenchError with the tail of its output."""
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=clean_env(env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: timed out after {timeout:.0f}s ({' '.join(argv)})") from exc
    if res.returncode != 0:
        raise BenchError(
            f"{what}: exit code {res.returncode} ({' '.join(argv)})\n{text_tail(res.stdout + res.stderr)}"
        )
    return res.stdout


class Service:
    """A long-running child process (own session, output to ``log_path``) stopped with ``stop_signal``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        run_as: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = clean_env(env)
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} was not started")
        return self.proc.pid

    def start(self) -> None:
        # Drop to run_as directly (no runuser in between, so signals reach the real process).
        user = self.run_as if self.run_as is not None and os.geteuid() == 0 else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.name} log {self.log_path} (tail) ---\n{file_tail(self.log_path, lines)}"

    def failure(self, what: str) -> BenchError:
        state = (
            "running" if self.alive() else f"exited with code {self.proc.returncode if self.proc else '?'}"
        )
        return BenchError(f"{self.name} ({state}): {what}\n{self.log_tail()}")

    def wait_ready(
        self, host: str, port: int, check: Callable[[], bool] | None = None, timeout: float = 20
    ) -> None:
        """Wait until ``host:port`` accepts TCP and ``check()`` (if given) returns True."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self.failure("exited during startup")
            if accepts_tcp(host, port) and (check is None or check()):
                return
            if time.monotonic() > deadline:
                raise self.failure(f"not serving on {host}:{port} after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 10) -> None:
        """Stop it (``stop_signal``, then SIGKILL to its process group after ``timeout``); idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, self.stop_signal)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


_REPO_ROOT = Path(__file__).resolve().parent.parent


def git_version() -> str:
    """The commit the benchmark measures ("abc1234", "+dirty" when proxy/ has uncommitted changes)."""
    repo = _REPO_ROOT
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "proxy"],
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(unknown commit)"
    return f"{head}{'+dirty' if dirty else ''}"
