"""The dedup window: event ids accepted per ingest partition, in a local RocksDB store backed by a Kafka changelog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import TopicPartition
from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from hub.core.config import ConfigError
from hub.kafka.clients import KafkaClients
from hub.kafka.writer import BatchWriter

log = logging.getLogger(__name__)
DEFAULT_WINDOW_S = 7 * 24 * 3600
# Event ids per changelog record: far below Kafka's 1 MiB default record limit even for 128-char ids.
CHUNK = 4000
# The store's layout: a store written otherwise (or by a future version) is wiped and restored.
LAYOUT = b"eduhub-dedup-1"
# Partition 0xFFFFFFFF is never a Kafka partition: its keys hold the store's metadata.
_META = b"\xff\xff\xff\xff"
_LAYOUT_KEY, _TOPIC_KEY, _CHECKPOINT = _META + b"layout", _META + b"topic", _META + b"checkpoint"
# Memory, whatever the window holds: one block cache per process, two write buffers. The cache holds the
# index and filter blocks (about 1.7 bytes an id: 35 MB at 20 million ids) and what else fits. Files stay
# small so that one file's whole bloom filter (about 230 KB) fits a shard of the cache (1 MiB).
CACHE_BYTES = 64 << 20
WRITE_BUFFER_BYTES = 16 << 20
FILE_BYTES = 8 << 20
# Files are rewritten at least this often, so RocksDB's TTL really removes expired ids from disk.
COMPACTION_PERIOD_S = 86_400
_CACHE = Cache(CACHE_BYTES)  # RocksDB allocates it as blocks are read


def changelog_configs(window_s: float) -> dict[str, str]:
    # Time retention is the expiry: a record older than the window (plus a day of slack) is of no use.
    return {"cleanup.policy": "delete", "retention.ms": str(int((window_s + 86_400) * 1000))}


class Restored(NamedTuple):
    """What one `restore` read: changelog records, the event ids in them, and the partitions read in full."""
    records: int
    ids: int
    full: int


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _checkpoint_key(partition: int, topic: str) -> bytes:
    return _CHECKPOINT + _u32(partition) + topic.encode()


def _ms(seconds: float) -> bytes:
    # 8-byte big-endian milliseconds: comparing the bytes compares the times
    return max(0, int(seconds * 1000)).to_bytes(8, "big")


def _options() -> Options:
    table = BlockBasedOptions()
    table.set_block_cache(_CACHE)
    table.set_bloom_filter(10, False)  # full filters: a miss (a new id, the usual case) seldom reads a block
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_target_file_size_base(FILE_BYTES)
    options.set_max_bytes_for_level_base(8 * FILE_BYTES)
    options.set_level_compaction_dynamic_level_bytes(True)
    options.set_max_background_jobs(2)
    options.set_max_open_files(512)
    options.set_keep_log_file_num(2)
    options.set_max_log_file_size(1 << 20)
    return options


class DedupWindow:
    """Which event ids this stage accepted in the last `window_s` seconds, per ingest partition.

    The truth is the changelog topic, written in the batch's transaction: ingest partition p of every
    source maps to changelog partition p, the ingest topic is the key, the batch's new event ids (newline-
    separated, CHUNK a record) the value, and the record's timestamp is when they were accepted.

    A local RocksDB store in `state_dir` (one per worker, on local disk) holds the window in bounded
    memory (CACHE_BYTES of block cache, two WRITE_BUFFER_BYTES write buffers): key = partition (4 bytes)
    + ingest topic + NUL + event id, value = accepted time (8-byte big-endian ms). Ids enter it only once
    their transaction committed (an aborted batch never hides its own events when re-read), in one write
    with the checkpoints of the batch's ingest partitions: the changelog offset after its last record
    (from the producer's acks). Every committed changelog record of an ingest partition below its
    checkpoint is in the store. Only that partition's owner writes its records, hence a checkpoint per
    ingest partition (in a rolling change, workers on other source lists write other keys to the same
    changelog partition). `restore` reads from the lowest checkpoint (or the window's start) on; an
    ingest partition without one is wiped and read in full, a checkpoint beyond the changelog's end (a
    recreated topic) wipes its changelog partition. Revoked partitions keep their data: when one comes
    back, only what its other owner wrote since is read. Expiry is by time: an id accepted before
    `now - window_s` is new again, and RocksDB's TTL drops it from disk at a compaction (every file is
    compacted at least every COMPACTION_PERIOD_S).
    """

    def __init__(self, topic: str, window_s: float = DEFAULT_WINDOW_S, *, state_dir: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.topic = topic
        self.window_s = window_s
        self.path = Path(state_dir)
        self._clock = clock
        self._pending: dict[TopicPartition, dict[str, float]] = {}
        self._writers: dict[int, BatchWriter] = {}  # task (partition number) → the writer of its open batch
        self._prefixes: dict[TopicPartition, bytes] = {}
        # Ids whose store write failed (a full disk): kept here, and no checkpoint moves until a restart.
        self._unstored: dict[TopicPartition, dict[str, float]] = {}
        self._no_wal = WriteOptions()
        self._no_wal.disable_wal = True  # restore: a crash loses a suffix of it, never a checkpoint's ids
        self._db: Rdict = self._open()

    # ---------------------------------------------------------------- the store
    def _open(self) -> Rdict:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the dedup store {self.path} ({exc}): set worker.state_dir to a "
                              f"writable folder on local disk") from None
        db = None
        try:
            db = self._rdict()
            layout, topic = db.get(_LAYOUT_KEY), db.get(_TOPIC_KEY)
            empty = layout is None and topic is None and next(iter(db.keys()), None) is None
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 — corrupt or unreadable: the changelog has it all
            log.error("dedup store %s cannot be read (%s: %s): wiping it; it is restored from %s", self.path,
                      type(exc).__name__, exc, self.topic)
            return self._recreate(db)
        if layout == LAYOUT and topic == self.topic.encode():
            return db
        if empty:
            self._write_meta(db)
            return db
        held = f"the changelog {topic.decode(errors='replace')}" if layout == LAYOUT and topic else "another layout"
        log.warning("dedup store %s holds %s: wiping it; it is restored from %s", self.path, held, self.topic)
        return self._recreate(db)

    def _rdict(self) -> Rdict:
        # RocksDB's TTL drops an id at a compaction once it was written more than the window ago. The options go
        # to the default column family too: else Rdict gives it those a store was created with (not our cache).
        options, ttl = _options(), max(1, math.ceil(self.window_s))
        try:
            db = Rdict(str(self.path), options, column_families={"default": options},
                       access_type=AccessType.with_ttl(ttl))
        except Exception as exc:
            if "LOCK" in str(exc):
                raise ConfigError(f"the dedup store {self.path} is in use by another worker process ({exc}): each "
                                  f"worker needs its own; give each worker on this host its own worker.instance_id, "
                                  f"or its own worker.state_dir") from None
            raise
        db.set_options({"periodic_compaction_seconds": str(COMPACTION_PERIOD_S)})
        return db

    def _recreate(self, db: Rdict | None) -> Rdict:
        if db is not None:
            with contextlib.suppress(Exception):  # it is deleted next anyway
                db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        db = self._rdict()
        self._write_meta(db)
        return db

    def _write_meta(self, target: Rdict | WriteBatch) -> None:
        # Written with every batch of ids, so TTL never drops the metadata before the ids
        target.put(_LAYOUT_KEY, LAYOUT)
        target.put(_TOPIC_KEY, self.topic.encode())

    def close(self) -> None:
        """Close the store (the worker does on stop); the window is unusable afterwards."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def checkpoint(self, tp: TopicPartition) -> int | None:
        """The changelog offset below which every committed record of ingest partition `tp` is in the store."""
        return self._checkpoints(tp.partition).get(tp.topic)

    def _checkpoints(self, partition: int) -> dict[str, int]:
        start = _CHECKPOINT + _u32(partition)
        found = {}
        for key, value in self._db.items(from_key=start):
            if not key.startswith(start):
                break
            found[key[len(start):].decode()] = int.from_bytes(value, "big")
        return found

    def size(self) -> int:
        """About how many ids the store holds, of every partition it kept (RocksDB's estimate, which
        counts expired ids not compacted away yet and overwritten ones until a compaction)."""
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def _prefix(self, tp: TopicPartition) -> bytes:
        return self._prefixes.get(tp) or self._prefixes.setdefault(tp, _u32(tp.partition) + tp.topic.encode() + b"\0")

    # ---------------------------------------------------------------- the batch
    def seen(self, tp: TopicPartition, event_id: str) -> bool:
        """True when `event_id` was accepted on `tp` within the window (or earlier in this batch)."""
        return self.checker(tp, self._clock())(event_id)

    def add(self, tp: TopicPartition, event_id: str, now: float) -> None:
        self._pending.setdefault(tp, {})[event_id] = now

    def checker(self, tp: TopicPartition, now: float) -> Callable[[str], bool]:
        """A per-partition `seen` for the hot loop: True for a repeat, else records the id as pending."""
        pending = self._pending.setdefault(tp, {})
        get = self._db.get
        prefix = self._prefix(tp)
        cutoff = _ms(now - self.window_s)
        unstored = self._unstored.get(tp)

        def check(event_id: str) -> bool:
            if event_id in pending:
                return True
            at = get(prefix + event_id.encode())
            if at is not None and at >= cutoff:
                return True
            if unstored and unstored.get(event_id, -math.inf) >= now - self.window_s:
                return True
            pending[event_id] = now
            return False

        return check

    def write(self, writer: BatchWriter, now_ms: int, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Append the new ids of `partitions` (default: all) to the changelog, inside the batch's transaction."""
        for tp in list(self._pending) if partitions is None else partitions:
            self._writers[tp.partition] = writer
            names = list(self._pending.get(tp, ()))
            for start in range(0, len(names), CHUNK):
                writer.append_to(self.topic, tp.partition, tp.topic.encode(),
                                 "\n".join(names[start:start + CHUNK]).encode(), now_ms)

    def committed(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """The batch of `partitions` (default: all) committed: its ids and checkpoints enter the store."""
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        done: dict[TopicPartition, dict[str, float]] = {}
        tps = list(self._pending) if partitions is None else list(partitions)
        for tp in tps:
            ids = self._pending.pop(tp, None)
            writer = self._writers.get(tp.partition)
            if ids:
                done[tp] = ids
                prefix, last, at = self._prefix(tp), None, b""
                for event_id, now in ids.items():
                    if now != last:
                        last, at = now, _ms(now)
                    put(prefix + event_id.encode(), at)
            end = writer.acked.get((self.topic, tp.partition)) if writer is not None else None
            if end is not None and not self._unstored:
                put(_checkpoint_key(tp.partition, tp.topic), end.to_bytes(8, "big"))
        for tp in tps:
            self._writers.pop(tp.partition, None)
        if batch.is_empty():
            return
        self._write_meta(batch)
        try:
            self._db.write(batch)
        except Exception:  # noqa: BLE001 — the batch committed: keep its ids, and let the changelog heal it
            log.exception("dedup store %s: writing %d ids failed; they stay in memory and no checkpoint moves "
                          "until a restart restores them from %s", self.path, sum(map(len, done.values())), self.topic)
            for tp, ids in done.items():
                self._unstored.setdefault(tp, {}).update(ids)

    def aborted(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in list(self._pending) if partitions is None else partitions:
            self._pending.pop(tp, None)
            self._writers.pop(tp.partition, None)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions moved away: forget their batch in flight, keep their ids (they may come back)."""
        self.aborted(partitions)

    # ---------------------------------------------------------------- restore
    async def restore(self, kafka: KafkaClients, partitions: Iterable[TopicPartition]) -> Restored:
        """Bring the store up to date for the given ingest partitions: read their changelog partitions from
        the checkpoint (or the window's start, whichever is later) to the end."""
        wanted: dict[int, set[str]] = {}
        for tp in partitions:
            wanted.setdefault(tp.partition, set()).add(tp.topic)
        changelog = [TopicPartition(self.topic, p) for p in sorted(wanted)]
        if not changelog:
            return Restored(0, 0, 0)
        consumer = kafka.consumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed")
        await kafka.start(consumer)
        records = ids = full = 0
        writing: asyncio.Future | None = None
        loop = asyncio.get_running_loop()
        try:
            consumer.assign(changelog)
            since_ms = int((self._clock() - self.window_s) * 1000)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in changelog})
            ends = await consumer.end_offsets(changelog)  # last stable offsets under read_committed
            remaining: dict[TopicPartition, int] = {}
            for tp in changelog:
                held = self._checkpoints(tp.partition)
                if held and max(held.values()) > ends[tp]:
                    log.warning("dedup store %s: a checkpoint of %s[%d] lies beyond its end %d (topic recreated?): "
                                "restoring the partition in full", self.path, tp.topic, tp.partition, ends[tp])
                    self._wipe(tp.partition, None)
                    held = {}
                missing = wanted[tp.partition] - set(held)
                for topic in missing:
                    self._wipe(tp.partition, topic)
                full += bool(missing)
                first = starts[tp].offset if starts[tp] is not None else ends[tp]
                begin = max(first, 0 if missing else min(held[t] for t in wanted[tp.partition]))
                if begin < ends[tp]:
                    consumer.seek(tp, begin)
                    remaining[tp] = ends[tp]
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in fetched.items():
                    if not messages:
                        continue
                    batch, n = self._load(tp.partition, wanted[tp.partition], messages, since_ms)
                    records += len(messages)
                    ids += n
                    if writing is not None:
                        await writing
                    # RocksDB writes without the GIL: the next records are fetched and split meanwhile
                    writing = loop.run_in_executor(None, self._db.write, batch, self._no_wal)
                for tp in list(remaining):
                    if await consumer.position(tp) >= remaining[tp]:
                        del remaining[tp]
            if writing is not None:
                writing, last = None, writing
                await last
            for tp in changelog:
                self._put_checkpoints(tp.partition, wanted[tp.partition], ends[tp])
            for tp in list(self._unstored):  # read back from the changelog into the store
                if TopicPartition(self.topic, tp.partition) in ends:
                    del self._unstored[tp]
        finally:
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)
            await consumer.stop()
            # Written without the WAL: on disk before any batch's write (with the WAL) may follow
            await loop.run_in_executor(None, self._db.flush)
        log.info("dedup window restored: %d changelog records, %d event ids, %d partitions (%d in full)",
                 records, ids, len(changelog), full)
        return Restored(records, ids, full)

    def _load(self, partition: int, topics: set[str], messages: list[Any], since_ms: int) -> tuple[WriteBatch, int]:
        """One write of a changelog partition's records: their ids of the window (whatever their ingest topic),
        and the checkpoints of the partitions restored, after them."""
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        part = _u32(partition)
        n = 0
        for message in messages:
            if message.value is None or message.key is None or message.timestamp < since_ms:
                continue
            prefix = part + message.key + b"\0"
            at = message.timestamp.to_bytes(8, "big")
            event_ids = message.value.split(b"\n")
            for event_id in event_ids:
                put(prefix + event_id, at)
            n += len(event_ids)
        # Read from at most the lowest checkpoint on: a higher one moves back a little (safe, and rare)
        end = (messages[-1].offset + 1).to_bytes(8, "big")
        for topic in topics:
            put(_checkpoint_key(partition, topic), end)
        self._write_meta(batch)
        return batch, n

    def _put_checkpoints(self, partition: int, topics: set[str], offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for topic in topics:
            batch.put(_checkpoint_key(partition, topic), offset.to_bytes(8, "big"))
        self._write_meta(batch)
        self._db.write(batch, self._no_wal)

    def _wipe(self, partition: int, topic: str | None) -> None:
        """Forget the ids and checkpoint of one ingest partition (`topic` None: of every ingest topic)."""
        batch = WriteBatch(raw_mode=True)
        if topic is None:
            batch.delete_range(_u32(partition), _u32(partition + 1))
            batch.delete_range(_CHECKPOINT + _u32(partition), _CHECKPOINT + _u32(partition + 1))
        else:
            start = _u32(partition) + topic.encode()
            batch.delete_range(start + b"\0", start + b"\1")
            batch.delete(_checkpoint_key(partition, topic))
        self._db.write(batch, self._no_wal)
