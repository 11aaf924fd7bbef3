"""The container HEALTHCHECK: GET one process's /healthz (worker or connector runtime) and exit 0 when it answers 200."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

URL_ENV = "EDUHUB_HEALTHCHECK_URL"
# The image runs the worker unless told otherwise; its /healthz is on worker.web_port (EDUHUB_WEB_PORT).
DEFAULT_PORT = 6066


def health_url(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """EDUHUB_HEALTHCHECK_URL, else the worker's /healthz on EDUHUB_WEB_PORT (6066) of the loopback.

    >>> health_url({"EDUHUB_WEB_PORT": "7000"})
    'http://127.0.0.1:7000/healthz'
    """
    env = os.environ if environ is None else environ
    if env.get(URL_ENV):
        return env[URL_ENV]
    return f"http://127.0.0.1:{env.get('EDUHUB_WEB_PORT') or DEFAULT_PORT}/healthz"


def check(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen): healthy only on a 2xx answer within the timeout."""
    # The probe asks whether this very process is alive, over the loopback: a self-signed certificate
    # of worker.tls_cert_file must not make a live worker look dead, so https is not verified here.
    context = ssl._create_unverified_context() if url.startswith("https:") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as answer:  # noqa: S310
            return 200 <= answer.status < 300, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:  # 503: a stage stalled
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, malformed URL
        return False, f"{url}: {exc}"


def main() -> int:
    healthy, seen = check(health_url())
    print(seen, file=sys.stdout if healthy else sys.stderr)  # Docker keeps the last output of each probe
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
