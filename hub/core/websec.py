"""HTTP hardening of the hub's own listeners: security headers, Host, Origin and bearer-token checks, TLS contexts."""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from hub.core.config import ConfigError

# The names a listener bound to this machine answers to without any configuration.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
# On every answer of every listener: no MIME sniffing, never framed, no Referer sent on, nothing cached
# (the answers hold operational data), and no active content unless a page sets its own policy.
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000"  # one year; sent only over TLS, where it means something
MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


async def _secure_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)  # a page may set its own (the status page's CSP)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)


def add_security_headers(app: web.Application) -> None:
    """Set SECURITY_HEADERS (and HSTS over TLS) on every answer of `app`, errors and 404s included."""
    app.on_response_prepare.append(_secure_headers)


def host_name(header: str | None) -> str | None:
    """The host of a Host header, lower case, without port or trailing dot; None if absent or malformed."""
    value = (header or "").strip().lower()
    if value.startswith("["):  # [::1]:8083
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1:]) if end > 0 else ("", "")
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name.rstrip(".") or None


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Loopback names, the address the listener binds (unless a wildcard) and the configured extra names."""
    names = set(LOOPBACK_HOSTS) | {h.strip().lower().rstrip(".") for h in extra if h.strip()}
    bind = bind_host.strip().strip("[]").lower()
    if bind not in WILDCARD_HOSTS:
        names.add(bind)
    return frozenset(names)


def cross_site(request: web.BaseRequest) -> bool:
    """True for a request a browser sent from another origin (Origin or Sec-Fetch-Site says so)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin.strip().lower())
        return f"{parts.scheme}://{parts.netloc}" != f"{request.scheme}://{request.host}".lower()
    return request.headers.get("Sec-Fetch-Site", "same-origin").lower() not in ("same-origin", "none")


def bearer_matches(header: str | None, token: bytes) -> bool:
    """Whether an Authorization header carries `Bearer <token>`, compared in constant time."""
    scheme, _, value = (header or "").strip().partition(" ")
    presented = value.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(presented, token) and bool(token)


def read_token(env_name: str, key: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The bearer token from the environment variable `env_name` (named by the config key `key`), or a ConfigError."""
    value = (os.environ if environ is None else environ).get(env_name, "").strip()
    if len(value) < MIN_TOKEN_CHARS:
        state = "is not set" if not value else f"has fewer than {MIN_TOKEN_CHARS} characters"
        raise ConfigError(f"{key}: the environment variable {env_name} {state} — set it to a random secret of at "
                          f"least {MIN_TOKEN_CHARS} characters (e.g. `{TOKEN_HINT}`); its clients send the same "
                          "value (`make run` makes one per run)")
    return value.encode("utf-8")


def server_ssl_context(cert_file: Path | None, key_file: Path | None, section: str) -> ssl.SSLContext | None:
    """A TLS server context from PEM files, or None when neither is set; a ConfigError naming the key otherwise."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        missing = "tls_cert_file" if cert_file is None else "tls_key_file"
        raise ConfigError(f"{section}.{missing}: not set — tls_cert_file and tls_key_file go together: set both "
                          "(PEM certificate chain and its private key) to serve HTTPS, or neither for plain HTTP")
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        if not Path(path).is_file():
            raise ConfigError(f"{section}.{name}: {path} does not exist or is not a file — expected a PEM file "
                              "readable by the hub")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # An empty password: an encrypted key fails here instead of prompting on the terminal.
        context.load_cert_chain(str(cert_file), str(key_file), password=b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{section}.tls_cert_file / {section}.tls_key_file: cannot load {cert_file} with "
                          f"{key_file} ({getattr(exc, 'reason', None) or exc}) — expected a PEM certificate chain "
                          "and its unencrypted private key, belonging together") from None
    return context
