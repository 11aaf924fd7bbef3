"""`eduhub connect`: the connector runtime as a process, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from connectors.rest import serve
from connectors.runtime import ConnectService
from hub.core.config import HubConfig
from hub.core.websec import read_token, server_ssl_context


def api_hosts(config: HubConfig) -> list[str]:
    """Names the REST API answers to besides loopback and connect.host: connect.allowed_hosts and the host of
    worker.connect_url (the name the worker's status page uses)."""
    hosts = list(config.connect.allowed_hosts)
    if config.worker.connect_url:
        hosts.append(urlsplit(config.worker.connect_url).hostname or "")
    return [h for h in hosts if h]


async def _main(config: HubConfig, echo: Callable[[str], None]) -> None:
    connect = config.connect
    # Both before any connector starts: a missing token or a bad certificate stops the process at once.
    token = read_token(connect.token_env, "connect.token_env")
    tls = server_ssl_context(connect.tls_cert_file, connect.tls_key_file, "connect")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = ConnectService(config)
    await service.start()
    runner = await serve(service, connect.host, connect.port, token=token, extra_hosts=api_hosts(config),
                         ssl_context=tls)
    echo(f"connectors running: {', '.join(sorted(service.runtimes))}; "
         f"REST API {'https' if tls else 'http'}://{connect.host}:{connect.port}/connectors "
         f"(bearer token from {connect.token_env})")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await service.stop()


def run_connect(config: HubConfig, echo: Callable[[str], None] = print) -> None:
    asyncio.run(_main(config, echo))
