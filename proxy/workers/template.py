"""The worker template: one pristine process, forked before the event loop, that forks every worker.

A worker started as a fresh interpreter (`python -m proxy.workers.worker`) imports and builds its own
copy of the code: 45-55 MB of private memory each. Instead, the control process, before its event
loop and any thread exist, imports what a worker runs (preload), moves those objects out of the
collector's reach (gc.freeze(): a collection writes to the header of every object it visits, which
would copy the page) and forks the template. The template forks a worker whenever the control process
asks (at start, and to restart one that died); the worker's imported code stays shared, copy on write,
with the template, the control process and the other workers: in PSS those pages count once.

The worker is not the template's child. The template forks an intermediate process that forks the
worker and exits; the control process is a child subreaper (PR_SET_CHILD_SUBREAPER), so the orphaned
worker becomes its child, and the control process waits for it (ForkedProcess: a pidfd in the event
loop), reads its exit code and kills it as it would a subprocess.

The template's socketpair (SOCK_SEQPACKET): the control process sends one byte with the worker's
channel end as SCM_RIGHTS; the template answers with the worker's pid (4 bytes, 0 if the fork
failed). When the control process's end closes, the template exits.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import gc
import importlib
import logging
import os
import pkgutil
import signal
import socket
import struct
import sys
from collections.abc import Iterable

log = logging.getLogger("dbproxy.workers")

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
SPAWN_TIMEOUT = 10.0   # the template forks twice and answers within this (milliseconds, normally)
# Never imported ahead: modules that run something on import.
_NOT_PRELOADED = ("__main__",)


def _prctl(option: int, value: int | bytes) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_process_name(name: str) -> None:
    """The name `ps -o comm` and /proc/PID/comm show (15 bytes at most; Linux only, else nothing)."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def preload(engines: Iterable[str]) -> int:
    """Import the modules a worker runs: proxy.* without the engines not in `engines`; how many."""
    import uvloop  # noqa: F401

    from . import worker  # noqa: F401
    skip = tuple(f"proxy.engines.{name}" for name in ("postgres", "mysql") if name not in set(engines))
    count = 0
    for info in pkgutil.walk_packages(importlib.import_module("proxy").__path__, "proxy.",
                                      onerror=lambda name: None):
        name = info.name
        if name.rsplit(".", 1)[-1] in _NOT_PRELOADED or name.startswith(skip):
            continue
        try:
            importlib.import_module(name)
        except Exception:   # an optional dependency missing: that module is imported later, if ever
            continue
        count += 1
    return count


def _flush_logs() -> None:
    """Write the log lines batched so far (a forked child would write them a second time)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class Template:
    """The control process's handle on the template process."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock

    @classmethod
    def start(cls, engines: Iterable[str]) -> Template | None:
        """Preload, freeze and fork the template (None where that is not possible: not Linux, or a
        failure, logged; the workers are then started as fresh interpreters). Call before any
        event loop or thread exists."""
        if not hasattr(os, "pidfd_open") or not _prctl(PR_SET_CHILD_SUBREAPER, 1):
            log.info("workers start as fresh interpreters (no pidfd_open or PR_SET_CHILD_SUBREAPER here)")
            return None
        modules = preload(engines)
        gc.collect()
        gc.freeze()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _flush_logs()
        pid = os.fork()
        if pid == 0:   # the template
            code = 1
            try:
                ours.close()
                code = _serve_template(theirs)
            finally:
                os._exit(code)
        theirs.close()
        log.debug("worker template pid %d (%d modules preloaded)", pid, modules)
        ours.settimeout(SPAWN_TIMEOUT)
        return cls(pid, ours)

    def spawn(self, channel: socket.socket) -> int:
        """Fork a worker that serves `channel` (its end of the control socketpair); its pid.

        Blocks until the template answers (two forks: milliseconds); raises OSError if the
        template is gone or failed."""
        fds = array.array("i", [channel.fileno()])
        self._sock.sendmsg([b"W"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        answer = self._sock.recv(4)
        if len(answer) != 4:
            raise OSError("the worker template is gone")
        (pid,) = struct.unpack("!i", answer)
        if pid <= 0:
            raise OSError("the worker template could not fork a worker")
        return pid

    def close(self) -> None:
        """The template exits (its socket's other end sees EOF); reaped by waitpid."""
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve_template(sock: socket.socket) -> int:
    """The template's loop: a worker for each request, until the control process's end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the process group: the control process decides
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    set_process_name("dbproxy-tmpl")
    while True:
        try:
            message, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(4))
        except OSError:
            return 1
        if not message:
            return 0
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sock.send(struct.pack("!i", 0))
            continue
        try:
            pid = _fork_worker(fds[0], sock)
        except OSError:
            pid = 0
        finally:
            os.close(fds[0])
        sock.send(struct.pack("!i", pid))


def _fork_worker(channel_fd: int, template_sock: socket.socket) -> int:
    """Fork an intermediate that forks the worker and exits (the worker is then the control
    process's child, the subreaper's); the worker's pid, once that is so."""
    read_end, write_end = os.pipe()
    _flush_logs()
    intermediate = os.fork()
    if intermediate == 0:
        code = 1
        try:
            os.close(read_end)
            worker = os.fork()
            if worker == 0:
                os.close(write_end)
                _run_worker(channel_fd, template_sock)   # never returns
            os.write(write_end, struct.pack("!i", worker))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        answer = os.read(read_end, 4)
    finally:
        os.close(read_end)
        os.waitpid(intermediate, 0)   # the worker is reparented to the control process from here on
    if len(answer) != 4:
        raise OSError("the intermediate process failed")
    return int(struct.unpack("!i", answer)[0])


def _run_worker(channel_fd: int, template_sock: socket.socket) -> None:
    code = 1
    try:
        template_sock.close()
        set_process_name("dbproxy-worker")
        from .worker import main
        code = main(["--fd", str(channel_fd)])
    except BaseException:
        log.exception("dbproxy worker failed")
    finally:
        _flush_logs()
        os._exit(code)


class ForkedProcess:
    """A worker forked by the template and reparented to this (subreaper) process: the part of
    asyncio.subprocess.Process the WorkerSet uses (pid, returncode, wait(), kill())."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = os.pidfd_open(pid)   # a zombie still has one: the pid is ours until reaped
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:   # reaped by someone else: the exit code is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:   # unreaped: the pid cannot have been reused
            os.kill(self.pid, signum)
