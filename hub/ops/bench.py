"""The `sql` connector benchmark; `eduhub bench all` (every stage and its peers) is in hub/ops/bench_all.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.core.config import HubConfig, SourceConfig


@dataclass
class Figure:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def classes_table(name: str, metadata: Any) -> Any:
    """A school.class source table as the `sql` connector reads it by default (id, created/updated)."""
    import sqlalchemy as sa

    return sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True),
                    *[sa.Column(c, sa.Text) for c in ("class_id", "school_code", "school_year", "name",
                                                      "homeroom_teacher_id")],
                    sa.Column("grade", sa.Integer), sa.Column("size", sa.Integer),
                    sa.Column("created_at", sa.DateTime), sa.Column("updated_at", sa.DateTime))


async def run_sql_bench(config: HubConfig, url: str, rows: int, batch_size: int,
                        echo: Callable[[str], None]) -> Figure:
    """Rows/s of the `sql` connector with its runtime: a fresh table of `rows` classes in the database
    at `url`, published to a fresh ingest topic (snapshot, batch_size rows a poll)."""
    from datetime import datetime, timedelta

    import sqlalchemy as sa

    from connectors.runtime import ConnectService

    table = f"bench_classes_{uuid.uuid4().hex[:8]}"
    source = f"bench-{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    classes = classes_table(table, metadata)
    metadata.create_all(engine)
    base = datetime(2026, 1, 1, 7, 0)
    echo(f"inserting {rows} rows into {table}…")
    with engine.begin() as conn:
        for start in range(0, rows, 10_000):
            conn.execute(classes.insert(), [
                {"id": n + 1, "class_id": f"31THPT{n % 90:03d}-2025-2026-10A{n}", "school_code": f"31THPT{n % 90:03d}",
                 "school_year": "2025-2026", "name": f"10A{n}", "homeroom_teacher_id": None, "grade": 10,
                 "size": 40, "created_at": base + timedelta(seconds=n), "updated_at": base + timedelta(seconds=n)}
                for n in range(start, min(start + 10_000, rows))])
    bench_config = config.model_copy(update={
        "sources": [*config.sources, SourceConfig(id=source)],
        "connectors": [{"name": source, "kind": "sql", "source": source, "url": url, "table": table,
                        "entity": "school.class", "batch_size": batch_size}],
        "connect": config.connect.model_copy(update={"offsets_topic": f"{source}.offsets"}),
    })
    service = ConnectService(bench_config)
    await service.start()
    runtime = service.get(source)
    started = time.perf_counter()
    try:
        while runtime.status.published < rows:
            if runtime.status.last_error:
                raise RuntimeError(runtime.status.last_error)
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        metadata.drop_all(engine)
    return Figure("sql connector: snapshot read + publish + offsets", rows, elapsed)
