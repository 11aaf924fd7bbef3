"""`eduhub connect`: the connector runtime as a process, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from connectors.rest import serve
from connectors.runtime import ConnectService
from hub.core.config import HubConfig


async def _main(config: HubConfig, echo: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = ConnectService(config)
    await service.start()
    runner = await serve(service, config.connect.host, config.connect.port)
    echo(f"connectors running: {', '.join(sorted(service.runtimes))}; "
         f"REST API http://{config.connect.host}:{config.connect.port}/connectors")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await service.stop()


def run_connect(config: HubConfig, echo: Callable[[str], None] = print) -> None:
    asyncio.run(_main(config, echo))
