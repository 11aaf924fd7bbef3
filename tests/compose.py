"""Compose's variable interpolation, as `docker compose` applies it, for the tests that read docker-compose.yml."""

from __future__ import annotations

import re
from collections.abc import Callable

_BODY = re.compile(r"(\w+)(:?[-?+])?(.*)", re.S)


def interpolate(text: str, env: dict[str, str], required: Callable[[str], str] | None = None) -> str:
    """$$, ${VAR}, ${VAR:-default}, ${VAR:?error}, ${VAR:+alternative}, nested, lazily (an unused branch is not
    evaluated). A required variable without a value raises KeyError naming it, or takes `required(name)`."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            name, op, rest = _BODY.match(text[i + 2:j - 1]).groups()
            value, given = env.get(name, ""), bool(env.get(name))
            if op in (":-", "-") and not given:
                value = interpolate(rest, env, required)
            elif op in (":?", "?") and not given:
                if required is None:
                    raise KeyError(f"required variable {name} is missing a value: {rest}")
                value = required(name)
            elif op in (":+", "+"):
                value = interpolate(rest, env, required) if given else ""
            out.append(value)
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
