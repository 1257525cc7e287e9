"""The durable decision log: a write-ahead log of segment files, group-committed, flushed into DuckDB.

Guarantee: a record (decision, reward, activation) is acknowledged only after the bytes of its
line are written to the current segment file and an ``fdatasync`` of that file, called after
the write completed, has returned: an acknowledged record survives a crash of the process or the
machine (as far as the disk honours fsync). Group commit, pipelined: ``writers`` threads (default
4) each take everything queued (optionally after ``group_commit_ms`` of extra gathering), write it
under the file lock, then fsync outside it (on the segment's own descriptor, which a rotation
closes only after its last fsync returned), so one group's fsync overlaps the next group's write
and fsync (on the benchmark VM a lone fsync took ~3.5 ms with idle CPUs, ~0.15 ms with busy ones:
mostly the wake-up on its completion, which overlapping fsyncs hide); one fsync serves every
request of its group.

Preallocation (``preallocate_bytes``, default 1 MiB): a segment is extended ahead of its writes by
zero-filled chunks (written with the group whose write got within half a chunk of the end, and made
durable by that group's fsync), and groups are written in place (``pwrite`` at the logical end), so
most fsyncs change no file size: ``fdatasync`` then flushes data blocks only, without a journal
commit of the inode (the technique of PostgreSQL's zero-filled WAL segments; measured on the
benchmark VM's ext4, idle: 0.10 vs 0.20 ms and 50 vs 100 us of CPU per write + fdatasync). Readers
drop the zero tail (and any zero run a machine crash left before unacknowledged lines: JSON lines
never hold a NUL byte).

A flusher thread, every ``flush_interval_s`` (default 5 s): closes the current segment (a new one takes the
writes), waits for the fsyncs still running on the closed ones, reads every closed segment, builds Arrow
tables of its records, inserts its records into the store's tables in one DuckDB
transaction (``INSERT OR IGNORE`` on the primary keys: event_id, reward_id), records the segment in
``serve_segments``, commits, and only then deletes the segment files. On start,
:meth:`DecisionLog.recover` does the same for every segment left by a previous process, before
any new request: nothing acknowledged is lost (it is in a segment or already in DuckDB) and
nothing is inserted twice (the primary keys ignore a segment replayed after a crash between the
commit and the file's deletion). A torn last line (a crash in the middle of a write, never
acknowledged) is dropped.

Segment files: ``<wal_dir>/seg-<seq>.wal``, one line per submission (a request's records): a JSON
array of objects ``{"k": "D"|"d"|"r"|"a", ...}`` (a single object per line is read too). ``"D"`` is a
block of ``n`` decisions in columns (each key a list of n values, or one value shared by all n: a
batch or a micro-batched group, written and read without a dict per decision); ``"d"`` is one
decision (older segments).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import json
import logging
import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from grpokit.serve import jsonio
from grpokit.serve.tables import DECISION_COLUMNS, REWARD_COLUMNS, StoreBusy, connect

__all__ = ["DecisionLog", "read_segment"]

log = logging.getLogger("grpokit.serve")
_STOP = object()
_DECISION_NAMES = [n for n, _ in DECISION_COLUMNS]
_REWARD_NAMES = [n for n, _ in REWARD_COLUMNS]


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(fd: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


def read_segment(path: Path) -> tuple[list[dict], bool]:
    """The records of one segment file and whether its last line was torn (and dropped); the zero bytes
    of preallocation (the tail, or a run before unacknowledged lines after a machine crash) are skipped."""
    data = path.read_bytes().rstrip(b"\0")
    lines = data.split(b"\n")
    torn = False
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        torn = True  # no newline at the end: the last write did not complete
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        if line[:1] == b"\0":  # zeros a machine crash left where unacknowledged writes did not reach the disk
            line = line.lstrip(b"\0")
            if not line:
                continue
        try:
            obj = jsonio.loads(line)
        except json.JSONDecodeError:
            log.error("segment %s line %d is not valid JSON; skipped", path, i + 1)
            continue
        if isinstance(obj, list):  # one submission: its records, written (and torn) together
            out.extend(obj)
        else:
            out.append(obj)
    return out, torn


def _as_json_text(values) -> list:
    return [v if v is None or isinstance(v, str) else jsonio.dumps(v).decode() for v in values]


_ARROW_TYPES = {"VARCHAR": pa.string(), "TIMESTAMP": pa.timestamp("us"), "INTEGER": pa.int64(), "BIGINT": pa.int64(),
                "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_()}


def _epoch_us(values: list) -> pa.Array:
    """Epoch seconds (floats) as ``timestamp[us]``: ``floor(s * 10^6)`` microseconds."""
    us = pc.floor(pc.multiply(pa.array(values, pa.float64()), 1e6))
    return pc.cast(pc.cast(us, pa.int64()), pa.timestamp("us"))


def _row_columns(records: list[dict], names) -> dict[str, list]:
    return {n: [r.get(n) for r in records] for n in names}


_DECISION_JSON = ("context", "probabilities", "action_value")


def _decision_table(blocks: list[tuple[int, dict]], rows: list[dict]) -> pa.Table:
    """The decisions of columnar records (``{"k": "D", "n": n, column: a list of n values, or one
    non-list value for all n}``, with their segment seq) and of row records (``{"k": "d", column:
    value}``, older segments), the first row per event_id kept. The blocks' columns are joined as
    lists (a shared value repeated by list multiplication), then converted once per column."""
    cols: dict[str, list] = {n: [] for n in _DECISION_NAMES}
    for seq, b in blocks:
        n = b["n"]
        for name, col in cols.items():
            v = seq if name == "wal_segment" else b.get(name)
            if type(v) is list:  # one value per decision (a shared value is never a list)
                if len(v) != n:
                    raise ValueError(f"a columnar decision record has {len(v)} values of {name!r} for n = {n}")
                col += v
            else:
                col += [v] * n
    for r in rows:
        for name, col in cols.items():
            col.append(r.get(name))
    return _table(cols, DECISION_COLUMNS, ("ts",), _DECISION_JSON, key="event_id")  # a replayed duplicate: first kept


def _table(cols: dict[str, list], columns, ts_cols: tuple[str, ...], json_cols: tuple[str, ...] = (),
           key: str | None = None) -> pa.Table:
    """An Arrow table of the column lists ``cols`` in ``columns`` (name, DuckDB type); epoch-second
    ``ts_cols`` as timestamps, ``json_cols`` as JSON text; with ``key``, the first row per key kept."""
    arrays, names = [], []
    for name, sql_type in columns:
        col = cols[name]
        if name in ts_cols:
            arr = _epoch_us(col)
        else:
            if name in json_cols:
                col = _as_json_text(col)
            arr = pa.array(col, _ARROW_TYPES[sql_type.split()[0]])
        arrays.append(arr)
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    if key is not None and pc.count_distinct(table.column(key)).as_py() != table.num_rows:
        keys = table.column(key).to_pylist()
        seen: set = set()
        table = table.take([i for i, k in enumerate(keys) if not (k in seen or seen.add(k))])
    return table


def n_rows(records: list[dict]) -> int:
    """Rows (decisions, rewards, activations) in ``records``: a columnar decision record counts its ``n``."""
    return sum(r["n"] if r.get("k") == "D" else 1 for r in records)


class DecisionLog:
    """Write-ahead log + DuckDB flusher for one store file (see the module docstring for the guarantee)."""

    def __init__(self, store: str | Path, wal_dir: str | Path, *, group_commit_ms: float = 1.0, fsync: bool = True,
                 flush_interval_s: float = 5.0, segment_max_bytes: int = 64 << 20, lock_timeout_s: float = 10.0,
                 on_flush: Callable | None = None, poll_interval_s: float = 1.0, writers: int = 4,
                 preallocate_bytes: int = 1 << 20) -> None:
        self.store = Path(store)
        self.wal_dir = Path(wal_dir)
        self.group_commit_s = group_commit_ms / 1000.0
        self.fsync = fsync
        self.flush_interval_s = flush_interval_s
        self.poll_interval_s = min(poll_interval_s, flush_interval_s)
        self.last_move_at: float | None = None  #: when closed segments last moved into DuckDB
        self.segment_max_bytes = segment_max_bytes
        if preallocate_bytes < 0:
            raise ValueError(f"preallocate_bytes must be >= 0, got {preallocate_bytes}")
        self.preallocate_bytes = int(preallocate_bytes)  #: zero-filled chunk ahead of the writes (0: plain appends)
        self._zeros = b"\0" * self.preallocate_bytes
        self._end = 0  #: the current segment's physical size (logical size ``_size`` + zero-filled tail)
        self.lock_timeout_s = lock_timeout_s
        self.on_flush = on_flush
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._fd_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._fd: int | None = None
        self._seq = 0
        self._size = 0
        self.n_writers = max(1, int(writers))
        self._inflight: dict[int, int] = {}  #: segment seq -> fsyncs running on it (under _sync_cond)
        self._closing: dict[int, int] = {}  #: rotated segment seq -> its descriptor, closed by its last fsync
        self._sync_cond = threading.Condition()
        self._writers: list[threading.Thread] = []
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._count_lock = threading.Lock()
        self.submitted = 0  #: records submitted (written by the submitting thread only)
        self.written = 0  #: records through the writers, acknowledged or failed (under _count_lock)
        self.acked = 0  #: records acknowledged (fsync'd) by this process (under _count_lock)
        self.flushed = 0  #: records moved into DuckDB by this process (flusher only; replay included)
        self.replayed = 0  #: records moved into DuckDB by :meth:`recover`
        self.last_flush_error: str | None = None
        self.last_flush_at: float | None = None
        self.wal_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ segments

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.wal_dir.glob("seg-*.wal"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def _open_segment(self) -> None:
        self._seq += 1
        path = self.wal_dir / f"seg-{self._seq:012d}.wal"
        flags = os.O_WRONLY | os.O_CREAT | (0 if self.preallocate_bytes else os.O_APPEND)
        self._fd = os.open(str(path), flags, 0o600)
        _fsync_dir(self.wal_dir)
        self._size = 0
        self._end = 0

    def _rotate(self) -> None:
        """Close the current segment if it holds anything (caller holds ``_fd_lock``); a descriptor that
        fsyncs still use is closed by the last of them."""
        if self._fd is not None and self._size > 0:
            with self._sync_cond:
                if self._inflight.get(self._seq):
                    self._closing[self._seq] = self._fd
                else:
                    os.close(self._fd)
            self._open_segment()

    # ------------------------------------------------------------------ recovery and flushing

    def _lock(self) -> None:
        """Hold ``<wal_dir>/LOCK`` (flock) for this process's lifetime: one writer per decision log. The
        kernel drops it when the process dies, kill -9 included."""
        if self._lock_fd is not None:
            return
        import fcntl

        fd = os.open(str(self.wal_dir / "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"the decision log {self.wal_dir} is in use by another process (another "
                               "'grpokit serve' on the same store?); give each service its own store or log.wal_dir") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    _lock_fd: int | None = None

    def recover(self) -> dict:
        """Move every segment left on disk into DuckDB (call before :meth:`start`); returns counts."""
        self._lock()
        segs = self._segments()
        info = self._flush_segments(segs) if segs else {"segments": 0, "records": 0, "inserted": 0, "torn": 0}
        self.replayed += info["records"]
        self.flushed -= info["records"]
        remaining = self._segments()
        self._seq = max([s for s, _ in remaining] + [s for s, _ in segs] + [0])
        return info

    def _flush_segments(self, segs: list[tuple[int, Path]], con=None) -> dict:
        # the segments' records are parsed into many short-lived, acyclic objects (freed by reference
        # counting): the cyclic collector is paused meanwhile, else its collections, triggered by these
        # allocations and run with the GIL held, traverse them and stall the event loop (up to ~50 ms
        # seen per collection under load)
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._flush_segments_now(segs, con)
        finally:
            if paused:
                gc.enable()

    def _flush_segments_now(self, segs: list[tuple[int, Path]], con=None) -> dict:
        blocks, decisions, rewards, activations, seg_rows = [], [], [], [], []
        torn = 0
        n_records = 0
        for seq, path in segs:
            records, was_torn = read_segment(path)
            torn += was_torn
            n_seg = 0
            for r in records:
                k = r.pop("k", None)
                if k == "D":
                    blocks.append((seq, r))
                    n_seg += r["n"]
                    continue
                if k == "d":
                    r["wal_segment"] = seq
                    decisions.append(r)
                elif k == "r":
                    rewards.append(r)
                elif k == "a":
                    activations.append(r)
                else:
                    continue
                n_seg += 1
            seg_rows.append((seq, n_seg))
            n_records += n_seg
        own = con is None
        if own:
            con = connect(self.store, self.lock_timeout_s)
        try:
            before = self._counts(con)
            con.execute("BEGIN TRANSACTION")
            try:
                if blocks or decisions:
                    df = _decision_table(blocks, decisions)
                    con.register("__serve_d", df)
                    con.execute(f"INSERT OR IGNORE INTO decisions ({', '.join(_DECISION_NAMES)}) "
                                f"SELECT {', '.join(_DECISION_NAMES)} FROM __serve_d")
                    con.unregister("__serve_d")
                if rewards:
                    df = _table(_row_columns(rewards, _REWARD_NAMES), REWARD_COLUMNS, ("received_at",), ("components",),
                                key="reward_id")
                    con.register("__serve_r", df)
                    con.execute(f"INSERT OR IGNORE INTO rewards ({', '.join(_REWARD_NAMES)}) "
                                f"SELECT {', '.join(_REWARD_NAMES)} FROM __serve_r")
                    con.unregister("__serve_r")
                if activations:
                    df = _table(_row_columns(activations, ("event_id", "activated_at")),
                                (("event_id", "VARCHAR"), ("activated_at", "TIMESTAMP")), ("activated_at",), key="event_id")
                    con.register("__serve_a", df)
                    con.execute("INSERT OR IGNORE INTO activations SELECT event_id, activated_at FROM __serve_a")
                    con.unregister("__serve_a")
                now = pd.Timestamp.now(tz="UTC").tz_localize(None)
                for seq, n in seg_rows:
                    con.execute("INSERT INTO serve_segments VALUES (?, ?, ?)", [seq, n, now])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            after = self._counts(con)
        finally:
            if own:
                con.close()
        for _, path in segs:
            path.unlink(missing_ok=True)
        _fsync_dir(self.wal_dir)
        self.flushed += n_records
        return {"segments": len(segs), "records": n_records, "inserted": after - before, "torn": torn}

    @staticmethod
    def _counts(con) -> int:
        return sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("decisions", "rewards", "activations"))

    def flush(self, move: bool = True) -> dict:
        """Close the current segment and move every closed one into DuckDB now (``move``); then run
        ``on_flush`` (the poll of versions), skipped when nothing moved and nobody wrote the store."""
        with self._flush_lock:
            segs = []
            if move:
                with self._fd_lock:
                    self._rotate()
                    current = self._seq
                with self._sync_cond:  # a closed segment is read once its last fsync returned
                    self._sync_cond.wait_for(lambda: not any(n for s, n in self._inflight.items() if s < current))
                segs = [(s, p) for s, p in self._segments() if s < current]
            started = time.time()
            info = {"segments": 0, "records": 0, "inserted": 0, "torn": 0}
            if not segs and (self.on_flush is None or self._store_signature() == self._signature):
                # nothing to move, and nobody wrote the store since we last closed it: no need to poll
                self.last_flush_at = time.time()
                if move:
                    self.last_move_at = started
                    self.last_flush_error = None
                return info
            try:
                con = connect(self.store, self.lock_timeout_s)
                try:
                    # one DuckDB thread: the insert then leaves the other core to the event loop, and
                    # DuckDB's worker coordination cost more CPU than it saved (measured: 10-30 % of a
                    # 10,000-record flush)
                    con.execute("SET threads = 1")
                    if segs:
                        info = self._flush_segments(segs, con)
                    if self.on_flush is not None:
                        self.on_flush(con)
                finally:
                    con.close()
                    self._signature = self._store_signature()
                if move:
                    self.last_move_at = started
                self.last_flush_error = None
                self.last_flush_at = time.time()
            except StoreBusy as err:
                self.last_flush_error = str(err)
                log.warning("flush postponed: %s", err)
            except Exception as err:  # noqa: BLE001 - the segments stay on disk; retried next cycle
                self.last_flush_error = f"{type(err).__name__}: {err}"
                log.exception("flush failed; the segments stay on disk and are retried")
            return info

    _signature: tuple | None = None

    def _store_signature(self) -> tuple:
        """(mtime_ns, size) of the store file and DuckDB's own WAL beside it: changes when anyone writes."""
        out = []
        for p in (self.store, Path(str(self.store) + ".wal")):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        self._lock()
        if self.last_move_at is None:
            self.last_move_at = time.time()  # recover() moved everything: the first move is due a period from now
        with self._fd_lock:
            if self._fd is None:
                self._open_segment()
        self._writers = [threading.Thread(target=self._write_loop, name=f"grpokit-wal-writer-{k}", daemon=True)
                         for k in range(self.n_writers)]
        self._flusher = threading.Thread(target=self._flush_loop, name="grpokit-wal-flusher", daemon=True)
        for t in self._writers:
            t.start()
        self._flusher.start()

    def submit(self, records: list[dict]) -> cf.Future:
        """Queue ``records`` (dicts with a ``"k"`` key); the future completes once they are fsync'd."""
        fut: cf.Future = cf.Future()
        data = jsonio.dumps(records) + b"\n"
        n = n_rows(records)
        self.submitted += n
        self._q.put((data, n, fut))
        return fut

    def _write_loop(self) -> None:
        """One writer: take every queued submission, write them under the file lock, fsync outside it
        (a duplicate descriptor, so the flusher may close and rotate the file meanwhile), acknowledge."""
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            batch = [item]
            if self.group_commit_s > 0:
                time.sleep(self.group_commit_s)
            stop = False
            while True:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:  # this writer's stop; the other writers' stops stay queued
                    stop = True
                    break
                batch.append(nxt)
            data = b"".join(b[0] for b in batch)
            n = sum(b[1] for b in batch)
            err = None
            sync_fd = seq = None
            try:
                with self._fd_lock:
                    self._write_locked(data)
                    if self.fsync:  # the descriptor stays open until this fsync is done (see _rotate)
                        sync_fd, seq = self._fd, self._seq
                        with self._sync_cond:
                            self._inflight[seq] = self._inflight.get(seq, 0) + 1
                    if self._size >= self.segment_max_bytes:
                        self._rotate()
            except OSError as e:  # disk full, I/O error: refuse to acknowledge
                err = e
            if sync_fd is not None:
                try:
                    _sync(sync_fd)  # covers every byte written to the file before the call: this group's
                except OSError as e:
                    err = e
                finally:
                    with self._sync_cond:
                        left = self._inflight[seq] - 1
                        if left:
                            self._inflight[seq] = left
                        else:
                            del self._inflight[seq]
                            closing = self._closing.pop(seq, None)
                            if closing is not None:  # the segment was rotated meanwhile: its last fsync closes it
                                os.close(closing)
                        self._sync_cond.notify_all()
            with self._count_lock:
                self.written += n
                if err is None:
                    self.acked += n
            for _, _, fut in batch:
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)
            if stop:
                return

    def _write_locked(self, data: bytes) -> None:
        """Write ``data`` at the current segment's logical end (caller holds ``_fd_lock``); with
        preallocation, extend the zero-filled tail by a chunk once the end is within half a chunk (the
        caller's fsync makes both durable; the next groups' fsyncs then change no file size)."""
        fd = self._fd
        view = memoryview(data)
        if not self.preallocate_bytes:
            while view:
                view = view[os.write(fd, view):]
            self._size += len(data)
            return
        off = self._size
        while view:
            n = os.pwrite(fd, view, off)
            view, off = view[n:], off + n
        self._size = off
        if off > self._end:
            self._end = off
        if self._end - off < len(self._zeros) // 2:
            zeros = memoryview(self._zeros)
            end = self._end
            while zeros:
                n = os.pwrite(fd, zeros, end)
                zeros, end = zeros[n:], end + n
            self._end = end

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            due = self.last_move_at is None or time.time() - self.last_move_at >= self.flush_interval_s - 1e-3
            self.flush(move=due)

    def stop(self) -> None:
        """Acknowledge what is queued, then move everything into DuckDB (a clean shutdown leaves no segment)."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        for _ in self._writers:
            self._q.put(_STOP)
        for t in self._writers:
            t.join()
        self._writers = []
        self.flush()
        current = None
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self._size == 0:  # nothing written to it (a preallocated one holds only zeros)
                    current = self.wal_dir / f"seg-{self._seq:012d}.wal"
            with self._sync_cond:  # (none left once the writers stopped; kept for safety)
                for fd in self._closing.values():
                    os.close(fd)
                self._closing.clear()
        # the empty current segment
        if current is not None:
            current.unlink(missing_ok=True)
        for _, p in self._segments():
            if p.stat().st_size == 0:
                p.unlink(missing_ok=True)
        self._unlock()

    @property
    def queued(self) -> int:
        """Records submitted and not yet through the writer."""
        return self.submitted - self.written

    @property
    def unflushed(self) -> int:
        """Records acknowledged by this process and not yet in DuckDB."""
        return max(0, self.acked - self.flushed)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex
