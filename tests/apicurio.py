"""A second Apicurio Registry JVM for a test (the jar the local stack resolves), started and stopped by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI

HEAP = "-Xmx256m"  # beside a running suite on a 2-core machine
START_BOUND_S, STOP_BOUND_S = 180.0, 60.0


def java_or_unavailable() -> str:
    """The java binary; without it the test fails in CI (a missing service is a failure there) and skips elsewhere."""
    java = shutil.which("java")
    if java is None:
        message = "java is not installed: this test runs the real Apicurio Registry"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return java


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Registry:
    """One Apicurio JVM on 127.0.0.1:`port`: `env` is its whole environment (plus PATH and JAVA_HOME to find
    java), `jvm_args` its system properties."""

    def __init__(self, java: str, jar: Path, port: int, log: Path, env: dict[str, str] | None = None,
                 jvm_args: tuple[str, ...] = ()) -> None:
        self.java, self.jar, self.port, self.log = java, jar, port, log
        self.env, self.jvm_args = dict(env or {}), list(jvm_args)
        self.process: subprocess.Popen | None = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def start(self, probe: str) -> float:
        """Start and wait (bounded) until `probe` answers 200; returns the seconds it took."""
        assert port_is_free(self.port), f"port {self.port} is taken: another registry would answer for ours"
        began = time.monotonic()
        with self.log.open("ab") as out:
            # The host is a system property so that the registry listens on loopback only.
            env = {"PATH": os.environ["PATH"], **({"JAVA_HOME": os.environ["JAVA_HOME"]} if "JAVA_HOME" in os.environ
                                                   else {}), **self.env}
            self.process = subprocess.Popen(
                [self.java, HEAP, "-Dquarkus.http.host=127.0.0.1", *self.jvm_args, "-jar", str(self.jar)],
                env=env, cwd=self.jar.parent, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}{probe}"
        deadline = began + START_BOUND_S
        while True:
            assert self.process.poll() is None, f"Apicurio exited {self.process.returncode}:\n{self.tail()}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Apicurio did not answer {url} in {START_BOUND_S:.0f} s:\n{self.tail()}"
            time.sleep(0.5)

    def stop(self) -> int | None:
        """SIGTERM by pid, SIGKILL after the bound; the exit code (None when never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
