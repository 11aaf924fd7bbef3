"""The worker's Faust app: Faust's services and web server, with no Kafka client and no data directory of its own."""

from __future__ import annotations

import faust
from faust.app.base import BootStrategy

# In its own module: defining a Faust app class gives its module's logger a NullHandler (mode's get_logger),
# which would hide the worker module's last-resort log lines in a process with no logging set up.


class _WebOnly(BootStrategy):
    """Start Faust's sensors and web server only. Its Kafka side (a consumer group with a leader-election
    topic, `eduhub-__assignor-__leader`, a reply consumer and a producer) would serve agents and tables,
    and the hub has none: each stage owns its consumers and transactional producers."""

    enable_kafka = False


class HubApp(faust.App):
    """The Faust app without Kafka and without a data directory."""

    BootStrategy = _WebOnly

    async def on_first_start(self) -> None:
        """Faust creates its data directory here, for RocksDB tables; the hub keeps no Faust table."""
