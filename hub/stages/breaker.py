"""The circuit breaker of HTTP delivery: stop sending to an endpoint that keeps failing, probe it to come back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → open after `failures` consecutive failures; open for `open_s`, then half-open: one
    probe request; its success closes the breaker, its failure opens it again."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.open_until = 0.0
        self._probing = False

    def allow(self) -> tuple[bool, float]:
        """(may send now, else seconds to wait before asking again); a True in half-open is the probe."""
        if self.state == "closed":
            return True, 0.0
        if self.state == "open":
            remaining = self.open_until - self.clock()
            if remaining > 0:
                return False, remaining
            self.state = "half_open"
        if self._probing:
            return False, 0.05
        self._probing = True
        return True, 0.0

    async def acquire(self) -> None:
        while True:
            allowed, wait = self.allow()
            if allowed:
                return
            await asyncio.sleep(min(wait, 1.0))

    def success(self) -> None:
        self.state, self.consecutive, self._probing = "closed", 0, False

    def failure(self) -> None:
        self.consecutive += 1
        self._probing = False
        if self.state == "half_open" or self.consecutive >= self.failures:
            self.state = "open"
            self.open_until = self.clock() + self.open_s

    def abandon(self) -> None:
        """A request got no answer (cancelled by a rebalance, or crashed): another may be the probe."""
        self._probing = False
