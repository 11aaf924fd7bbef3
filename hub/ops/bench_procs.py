"""The bench's row processes: started with their spec, their one-line JSON result read, stopped by pid."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hub.ops.bench_setup import PEER_ROWS

STOP_TIMEOUT_S = 60.0  # SIGTERM, then SIGKILL this much later
PR_SET_PDEATHSIG = 1


class RowFailed(RuntimeError):
    """A row's process failed or printed no result; the message ends with the tail of its log."""


def _death_signal() -> Any:
    """Linux: a function for the child, between fork and exec, so that it gets SIGTERM should the bench itself
    die without stopping it (prctl is looked up here, in the parent: nothing is loaded after the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """Every row process the bench starts, each stopped by its pid (SIGTERM, then SIGKILL), also on errors."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.running: dict[int, asyncio.subprocess.Process] = {}
        self.logs: dict[int, Path] = {}  # every pid started → its log (stderr)
        self.preexec = _death_signal()

    async def start(self, row: str, spec: dict[str, Any], tag: str) -> asyncio.subprocess.Process:
        module = "hub.ops.bench_peers" if row in PEER_ROWS else "hub.ops.bench_rows"
        log_path = self.workdir / f"{tag}-{row}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, row, "--spec", json.dumps(spec), stdout=asyncio.subprocess.PIPE,
                stderr=log, stdin=asyncio.subprocess.DEVNULL, env=self.env,
                preexec_fn=self.preexec)
        self.running[process.pid] = process
        self.logs[process.pid] = log_path
        return process

    async def finish(self, process: asyncio.subprocess.Process, timeout_s: float) -> dict[str, Any]:
        """Wait for the row to exit by itself (its count reached); stopped when it takes over `timeout_s`."""
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except asyncio.TimeoutError:
            await self.stop(process)
            raise RowFailed(f"did not finish within {timeout_s:.0f} s{self.tail(process)}") from None
        return self._result(process, stdout)

    async def stop(self, process: asyncio.subprocess.Process) -> dict[str, Any] | None:
        """SIGTERM the row, SIGKILL it STOP_TIMEOUT_S later; its result line when it printed one."""
        if process.returncode is None:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            process.kill()
            stdout, _ = await process.communicate()
        self.running.pop(process.pid, None)
        try:
            return self._result(process, stdout)
        except RowFailed:
            return None

    async def stop_all(self) -> None:
        for process in list(self.running.values()):
            await self.stop(process)

    def _result(self, process: asyncio.subprocess.Process, stdout: bytes) -> dict[str, Any]:
        self.running.pop(process.pid, None)
        for line in reversed(stdout.decode(errors="replace").splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    break
        raise RowFailed(f"exited with {process.returncode} without a result line{self.tail(process)}")

    def tail(self, process: asyncio.subprocess.Process, lines: int = 15) -> str:
        log_path = self.logs.get(process.pid)
        if log_path is None or not log_path.exists():
            return ""
        text = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return f" (log {log_path}):\n  " + "\n  ".join(text) if text else f" (log {log_path}: empty)"


def alive(pid: int) -> bool:
    """True while a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
