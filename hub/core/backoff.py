"""The one retry-delay policy of the hub: exponential, capped, with optional jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

Jitter = Callable[[float], float]


def full_jitter(delay: float, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Uniform in [0, delay]: many clients retrying one endpoint spread out (AWS "full jitter")."""
    return rand(0.0, delay)


def half_jitter(delay: float, rand: Callable[[float, float], float] = random.uniform) -> float:
    """Uniform in [delay/2, 3·delay/2]: keeps the order of magnitude, breaks lock-step restarts."""
    return delay * rand(0.5, 1.5)


def backoff_s(failures: int, initial_s: float = 1.0, max_s: float = 30.0, jitter: Jitter | None = None) -> float:
    """The wait after `failures` failures in a row: `initial_s`, doubling each time up to `max_s`,
    then passed through `jitter` when given."""
    # The exponent stops growing once the cap is reached: 2 ** 1024 is too large for a float, and a
    # retry loop that has failed for hours must still get its delay (not an OverflowError).
    doublings = min(max(0, failures - 1), 64)
    delay = min(max_s, initial_s * 2 ** doublings)
    return jitter(delay) if jitter else delay
