"""Connectors against the real parts: PostgreSQL changes in order, kill -9 mid-snapshot, HTTP push,
and a school spreadsheet through the worker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
import yaml

from connectors.http import sign
from connectors.runtime import ConnectService
from hub.demo.simulators import SchoolManagementDatabase, SchoolSpreadsheets, file_connector_config, smas_connector_configs
from hub.ops.bench import classes_table
from hub.core.config import HubConfig
from tests.kafka_helpers import header, read_to_end, wait_until
from tests.pg import postgres_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    with postgres_server(tmp_path_factory.mktemp("postgresql")) as url:
        yield url


def hub_config(local_stack, source: str, connectors: list[dict], port: int = 28084) -> HubConfig:
    return HubConfig.model_validate({
        "kafka": {"bootstrap_servers": local_stack.bootstrap_servers, "ingest_partitions": 3},
        "registry": {"url": local_stack.registry_url},
        "sources": [{"id": source}],
        "connect": {"port": port, "offsets_topic": f"it.connect.offsets.{source}"},
        "connectors": connectors,
    })


def ingest(local_stack, source: str) -> list[dict]:
    """The envelopes on ingest.<source> so far ([] before the connector runtime created the topic)."""
    try:
        records = read_to_end(local_stack.bootstrap_servers, f"ingest.{source}")
    except LookupError:
        return []
    return [json.loads(r.value) for r in records]


def class_row(code: str, name: str, ts: datetime, **extra) -> dict:
    return {"class_id": f"{code}-2025-2026-{name}", "school_code": code, "school_year": "2025-2026", "grade": 10,
            "name": name, "homeroom_teacher_id": None, "size": 40, "created_at": ts, "updated_at": ts, **extra}


def test_postgres_inserts_updates_and_deletes_arrive_as_c_u_d_in_order(local_stack, pg_url, unique_source):
    schema = f"s{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    smas = SchoolManagementDatabase(pg_url.replace("/eduhub", "/eduhub") + f"?options=-csearch_path%3D{schema}",
                                    seed=7)
    smas.create_schema()
    smas.seed(schools=1, classes_per_school=2, students_per_class=3, teachers_per_school=2)
    connectors = [c for c in smas_connector_configs(smas.url, source=unique_source) if c["table"] == "classes"]
    connectors[0]["poll_interval_s"] = 0.1
    config = hub_config(local_stack, unique_source, connectors)
    classes = sa.Table("classes", sa.MetaData(), autoload_with=sa.create_engine(smas.url))

    async def go() -> None:
        service = ConnectService(config)
        await service.start()
        runtime = service.get(connectors[0]["name"])
        try:
            await _until(status=runtime.status, predicate=lambda: runtime.status.published >= 2)
            # The database keeps naive Vietnam wall-clock time, as the simulator writes it.
            base = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).replace(tzinfo=None, microsecond=0) + timedelta(seconds=5)
            with sa.create_engine(smas.url).begin() as conn:
                conn.execute(classes.insert().values(**class_row("31THPT009", "10A9", base)))
            await _until(status=runtime.status, predicate=lambda: runtime.status.published >= 3)
            with sa.create_engine(smas.url).begin() as conn:
                conn.execute(classes.update().where(classes.c.name == "10A9")
                             .values(size=41, updated_at=base + timedelta(seconds=1)))
            await _until(status=runtime.status, predicate=lambda: runtime.status.published >= 4)
            with sa.create_engine(smas.url).begin() as conn:
                conn.execute(classes.update().where(classes.c.name == "10A9")
                             .values(deleted_at=base + timedelta(seconds=2), updated_at=base + timedelta(seconds=2)))
            await _until(status=runtime.status, predicate=lambda: runtime.status.published >= 5)
        finally:
            await service.stop()

    asyncio.run(go())
    events = ingest(local_stack, unique_source)
    assert [e["op"] for e in events if e["key"] != "31THPT009-2025-2026-10A9"] == ["r", "r"]
    mine = [e for e in events if e["key"] == "31THPT009-2025-2026-10A9"]
    assert [e["op"] for e in mine] == ["c", "u", "d"]  # one key, one partition: in order
    assert mine[1]["data"]["size"] == 41 and mine[2]["data"] is None
    assert len({e["event_id"] for e in events}) == len(events)


async def _until(predicate, bound_s: float = 30, status=None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached in time; {status.as_dict() if status else ''}")
        await asyncio.sleep(0.05)


def test_kill_9_mid_snapshot_then_restart_every_row_exactly_once_after_dedup(local_stack, pg_url, unique_source,
                                                                            tmp_path):
    table = f"classes_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    metadata = sa.MetaData()
    rows_table = classes_table(table, metadata)
    metadata.create_all(engine)
    base = datetime(2026, 1, 1, 8, 0)
    total = 20_000
    with engine.begin() as conn:
        conn.execute(rows_table.insert(), [
            class_row("31THPT001", f"10A{n}", base + timedelta(seconds=n // 7), id=n + 1) for n in range(total)])
    connector = {"name": f"pg-{unique_source}", "kind": "sql", "source": unique_source, "url": pg_url,
                 "table": table, "entity": "school.class", "batch_size": 500}
    config_path = tmp_path / "hub.yaml"
    config = hub_config(local_stack, unique_source, [connector], port=28085).model_dump(mode="json")
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "EDUHUB_CONFIG": str(config_path)}

    def start() -> subprocess.Popen:
        with (tmp_path / "connect.log").open("ab") as log:
            return subprocess.Popen([sys.executable, "-m", "hub", "connect"], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)

    first = start()
    try:
        assert wait_until(lambda: len(ingest(local_stack, unique_source)) >= 2_000, bound_s=90, interval_s=0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(ingest(local_stack, unique_source))
    second = start()
    try:
        wait_until(lambda: len({e["key"] for e in ingest(local_stack, unique_source)}) >= total, bound_s=180,
                   interval_s=1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    events = ingest(local_stack, unique_source)
    assert killed_at < total, "the kill did not land mid-snapshot"
    by_event = {e["event_id"]: e for e in events}  # dedup, as the hub does, by event_id
    per_key = Counter(e["key"] for e in by_event.values())
    assert len(per_key) == total and set(per_key.values()) == {1}
    assert {e["op"] for e in events} == {"r"}  # still the snapshot after the restart
    repeats = defaultdict(set)
    for e in events:
        repeats[e["key"]].add(e["event_id"])
    assert all(len(ids) == 1 for ids in repeats.values())  # a re-sent row carried the same event id


def test_http_bad_requests_publish_nothing_and_a_good_batch_everything(local_stack, unique_source, monkeypatch):
    secret = b"test-secret-" + uuid.uuid4().hex.encode()
    monkeypatch.setenv("EDUHUB_IT_SECRET", secret.decode())
    port = 28089
    config = hub_config(local_stack, unique_source, [{"name": f"http-{unique_source}", "kind": "http",
                                                      "source": unique_source, "port": port,
                                                      "secret_env": "EDUHUB_IT_SECRET", "max_body_bytes": 20_000,
                                                      "poll_interval_s": 0.05}])
    url = f"http://127.0.0.1:{port}/ingest/{unique_source}"

    def envelope(n: int) -> dict:
        return {"event_id": str(uuid.uuid4()), "source": unique_source, "entity": "school.class", "op": "c",
                "key": f"K{n}", "occurred_at": "2026-05-01T08:00:00+07:00", "data": {"class_id": f"K{n}"}}

    def signed(body: bytes, ts: int | None = None) -> dict:
        ts = int(time.time()) if ts is None else ts
        return {"X-EduHub-Timestamp": str(ts), "X-EduHub-Signature": sign(secret, ts, body),
                "Content-Type": "application/json"}

    async def go() -> dict:
        service = ConnectService(config)
        await service.start()
        statuses = {}
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                body = json.dumps([envelope(1)]).encode()
                bad = dict(signed(body), **{"X-EduHub-Signature": "sha256=" + "0" * 64})
                statuses["bad_signature"] = (await client.post(url, content=body, headers=bad)).status_code
                malformed = b'{"event_id": '
                statuses["malformed"] = (await client.post(url, content=malformed, headers=signed(malformed))).status_code
                big = json.dumps([envelope(n) for n in range(200)]).encode()
                statuses["oversize"] = (await client.post(url, content=big, headers=signed(big))).status_code
                good = [envelope(n) for n in range(3)]
                good_body = json.dumps(good).encode()
                headers = signed(good_body)
                statuses["good"] = (await client.post(url, content=good_body, headers=headers)).status_code
                statuses["replayed"] = (await client.post(url, content=good_body, headers=headers)).status_code
                statuses["good_ids"] = [e["event_id"] for e in good]
        finally:
            await service.stop()
        return statuses

    statuses = asyncio.run(go())
    assert {k: v for k, v in statuses.items() if k != "good_ids"} == {
        "bad_signature": 403, "malformed": 400, "oversize": 413, "good": 202, "replayed": 401}
    published = [e["event_id"] for e in ingest(local_stack, unique_source)]
    assert sorted(published) == sorted(statuses["good_ids"])  # the good batch, once; nothing else


def test_a_spreadsheet_with_one_bad_row_and_the_same_file_again(local_stack, start_worker, unique_source, tmp_path):
    start_worker([unique_source])
    inbox = tmp_path / "inbox"
    sheets = SchoolSpreadsheets(inbox, seed=11)
    connector = {**file_connector_config(inbox, source=unique_source, name=f"sheets-{unique_source}"),
                 "poll_interval_s": 0.1, "settle_s": 0}
    config = hub_config(local_stack, unique_source, [connector], port=28086)
    first = sheets.write_scores_csv(12, bad_rows=1)
    copy_of_first = tmp_path / "again.csv"
    shutil.copy(first, copy_of_first)

    async def go() -> None:
        service = ConnectService(config)
        await service.start()
        runtime = service.get(connector["name"])
        try:
            await _until(status=runtime.status, predicate=lambda: runtime.status.published >= 12 and not first.exists())
            shutil.move(copy_of_first, inbox / "the-same-export-renamed.csv")
            await _until(lambda: not (inbox / "the-same-export-renamed.csv").exists())
        finally:
            await service.stop()

    asyncio.run(go())
    events = ingest(local_stack, unique_source)
    assert len(events) == 12  # the second drop of the same content published nothing
    assert (inbox / "done" / "the-same-export-renamed.csv").exists()

    def outputs() -> tuple[int, int]:
        valid = [r for r in read_to_end(local_stack.bootstrap_servers, "edu.school.score")
                 if header(r, "eduhub.source") == unique_source]
        dead = read_to_end(local_stack.bootstrap_servers, f"hub.dlq.{unique_source}")
        return len(valid), len(dead)

    wait_until(lambda: sum(outputs()) == 12, bound_s=60)
    assert outputs() == (11, 1)
