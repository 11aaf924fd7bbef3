"""`eduhub connect` killed with SIGKILL mid-snapshot and mid-stream, restarted each time: every row version of a
SQLite table reaches edu.school.class exactly once, in order per key (a re-sent change carries the same
event_id, derived from the source position, and the worker's dedup drops it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from hub.ops.bench import classes_table
from tests.conftest import CONNECT_AUTH, PORT_OFFSET
from tests.faults.poison import log_excerpt, read_all, text_header
from tests.faults.report import ScenarioResult, record
from tests.kafka_helpers import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
CONNECT_PORT = 27301 + PORT_OFFSET
ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
ROWS = 3_000          # the snapshot
UPDATED = 1_500       # rows changed once while streaming (the kill lands among these changes)
INSERTED = 500        # rows added while streaming
UPDATED_AGAIN = 750   # rows changed a second time after the restart
BATCH = 10            # rows a poll: small, so that a kill lands between batches mid-way


class Connect:
    """`eduhub connect` as a child process; killed or stopped by its pid."""

    def __init__(self, config_path: Path, log_path: Path, name: str) -> None:
        self.config_path, self.log_path, self.name = config_path, log_path, name
        self.process: subprocess.Popen | None = None

    def start(self) -> "Connect":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hub", "connect"], cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, "EDUHUB_CONFIG": str(self.config_path)})
        return self

    def status(self) -> dict | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"eduhub connect exited with {self.process.returncode}:\n"
                                 f"{log_excerpt(self.log_path)}")
        try:
            response = httpx.get(f"http://127.0.0.1:{CONNECT_PORT}/connectors/{self.name}/status", timeout=2,
                                 headers=CONNECT_AUTH)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def published(self) -> int:
        status = self.status()
        return 0 if status is None else status["published"]

    def offset_id(self) -> int | None:
        status = self.status()
        return None if status is None or status["offset"] is None else status["offset"]["id"]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def local_now() -> datetime:
    """The database keeps naive Vietnam wall-clock time, as the school systems write it."""
    return datetime.now(ZONE).replace(tzinfo=None)


def row(n: int, ts: datetime, size: int = 40) -> dict:
    code = f"31THPT{n % 90:03d}"
    return {"id": n + 1, "class_id": f"{code}-2025-2026-10A{n}", "school_code": code, "school_year": "2025-2026",
            "name": f"10A{n}", "homeroom_teacher_id": None, "grade": 10, "size": size, "created_at": ts,
            "updated_at": ts}


def test_connect_killed_mid_snapshot_and_mid_stream_every_row_version_once_in_order(
        local_stack, start_worker, unique_source, tmp_path):
    bootstrap = local_stack.bootstrap_servers
    database = tmp_path / "school.db"
    engine = sa.create_engine(f"sqlite:///{database}")
    metadata = sa.MetaData()
    classes = classes_table("classes", metadata)
    metadata.create_all(engine)
    versions: dict[str, list[datetime]] = defaultdict(list)  # every row version, in order, per class_id

    def write(rows: list[dict], update: bool = False) -> None:
        with engine.begin() as conn:
            if update:
                for r in rows:
                    conn.execute(classes.update().where(classes.c.id == r["id"])
                                 .values(size=r["size"], updated_at=r["updated_at"]))
            else:
                conn.execute(classes.insert(), rows)
        for r in rows:
            versions[r["class_id"]].append(r["updated_at"])

    base = local_now() - timedelta(days=2)
    write([row(n, base + timedelta(seconds=n // 5)) for n in range(ROWS)])  # equal timestamps: ties on id

    name = f"sql-{unique_source}"
    connector = {"name": name, "kind": "sql", "source": unique_source, "url": f"sqlite:///{database}",
                 "table": "classes", "entity": "school.class", "batch_size": BATCH, "poll_interval_s": 0.1,
                 "timezone": "Asia/Ho_Chi_Minh"}
    worker = start_worker([unique_source], extra={
        "connect": {"port": CONNECT_PORT, "offsets_topic": f"it.connect.offsets.{unique_source}"},
        "connectors": [connector]})
    runs: list[Connect] = []

    def start() -> Connect:
        run = Connect(worker.config_path, tmp_path / "connect.log", name).start()
        runs.append(run)
        return run

    notes: list[str] = []
    try:
        # 1. kill -9 mid-snapshot
        first = start()
        assert wait_until(lambda: first.published() >= 300, bound_s=60, interval_s=0.02), log_excerpt(first.log_path)
        first.kill()
        first_offset = _stored_offset_id(bootstrap, unique_source, name)
        notes.append(f"killed mid-snapshot after offset id {first_offset} of {ROWS}")
        assert first_offset is None or first_offset < ROWS, "the kill did not land mid-snapshot"

        # 2. restart: the snapshot goes on to its end
        second = start()
        assert wait_until(lambda: second.offset_id() == ROWS, bound_s=60, interval_s=0.1), \
            f"snapshot not finished after the restart: {second.status()}"
        # 3. changes while streaming, and kill -9 among them
        t1 = local_now() - timedelta(hours=1)
        at_stream = second.published()
        write([{**row(n, base), "size": 41, "updated_at": t1 + timedelta(milliseconds=n)} for n in range(UPDATED)],
              update=True)
        write([row(ROWS + n, t1 + timedelta(milliseconds=UPDATED + n)) for n in range(INSERTED)])
        assert wait_until(lambda: second.published() >= at_stream + 400, bound_s=60, interval_s=0.02)
        second.kill()
        stream_offset = _stored_offset_id(bootstrap, unique_source, name)
        notes.append(f"killed mid-stream at stored offset id {stream_offset} (stream ends at id {ROWS + INSERTED})")
        assert stream_offset != ROWS + INSERTED, "the kill did not land mid-stream"
        # 4. restart: the stream goes on; then a second change of some rows while it runs
        third = start()
        last_id = ROWS + INSERTED
        assert wait_until(lambda: third.offset_id() == last_id, bound_s=60, interval_s=0.1), \
            f"stream not caught up after the restart: {third.status()}"
        t2 = local_now() - timedelta(minutes=30)
        write([{**row(n, base), "size": 42, "updated_at": t2 + timedelta(milliseconds=n)}
               for n in range(UPDATED_AGAIN)], update=True)
        assert wait_until(lambda: third.offset_id() == UPDATED_AGAIN, bound_s=60, interval_s=0.1), \
            f"second changes not published: {third.status()}"
        third.kill(signal.SIGTERM)
        assert third.process.returncode == 0, log_excerpt(third.log_path)
    finally:
        for run in runs:
            run.kill()
        engine.dispose()

    expected_total = sum(len(v) for v in versions.values())
    ingest = [json.loads(r.value) for r in read_all(bootstrap, f"ingest.{unique_source}")]
    ingested_ids = {e["event_id"] for e in ingest}

    def canonical() -> list:
        return [r for r in read_all(bootstrap, "edu.school.class") if text_header(r, "eduhub.source") == unique_source]

    def settled() -> bool:
        return len(canonical()) + len(read_all(bootstrap, f"hub.dlq.{unique_source}")) >= len(ingested_ids)

    wait_until(settled, bound_s=60, interval_s=1)
    arrived = canonical()
    letters = read_all(bootstrap, f"hub.dlq.{unique_source}")
    arrived_ids = Counter(text_header(r, "eduhub.event_id") for r in arrived)
    dead_ids = Counter(text_header(r, "eduhub.errors.event_id") for r in letters)

    # per key, the versions in the canonical topic (its order: one key, one partition)
    seen: dict[str, list[datetime]] = defaultdict(list)
    for r in arrived:
        at = datetime.fromisoformat(text_header(r, "eduhub.occurred_at")).astimezone(ZONE).replace(tzinfo=None)
        seen[r.key.decode()].append(at)
    lost_versions = sum(len([v for v in vs if v not in seen.get(k, [])]) for k, vs in versions.items())
    lost_ids = [i for i in ingested_ids if i not in arrived_ids and i not in dead_ids]
    duplicated = sum(n - 1 for n in arrived_ids.values()) + sum(1 for i in arrived_ids if i in dead_ids)
    order_kept = all(seen.get(k, []) == vs for k, vs in versions.items())
    ids_per_version = Counter((e["key"], e["occurred_at"]) for e in {e["event_id"]: e for e in ingest}.values())
    notes.append(f"ingest records {len(ingest)}, distinct event ids {len(ingested_ids)}: "
                 f"{len(ingest) - len(ingested_ids)} re-sent after a kill (same event_id)")
    notes.append(f"the worker's dedup dropped {len(ingest) - len(arrived) - len(letters)} re-sent records")
    notes.append(f"row versions written {expected_total}; versions with more than one event_id: "
                 f"{sum(1 for n in ids_per_version.values() if n > 1)}")
    record(ScenarioResult(
        scenario="eduhub connect kill -9 mid-snapshot and mid-stream", ingested=len(ingested_ids),
        canonical=len(arrived), dlq=len(letters), lost=max(lost_versions, len(lost_ids)), duplicated=duplicated,
        order_kept=order_kept, notes=notes))

    detail = "\n".join(notes) + "\nworker log:\n" + log_excerpt(worker.log_path)
    assert len(ingested_ids) == expected_total, detail
    assert all(n == 1 for n in ids_per_version.values()), detail  # a re-sent version kept its event_id
    assert not letters, [text_header(r, "eduhub.errors.rule") for r in letters[:5]]
    assert lost_versions == 0 and not lost_ids, detail
    assert duplicated == 0 and order_kept, detail
    assert len(arrived) == expected_total, detail


def _stored_offset_id(bootstrap: str, source: str, name: str) -> int | None:
    """The row id of the connector's offset as stored in Kafka (the last record of its offsets topic)."""
    stored = None
    for r in read_all(bootstrap, f"it.connect.offsets.{source}"):
        if r.key == name.encode():
            stored = None if r.value is None else json.loads(r.value)
    return stored.get("id") if isinstance(stored, dict) else None
