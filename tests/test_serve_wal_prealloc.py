"""The decision log's preallocated segments: zero-filled chunks ahead of the writes, in-place writes,
readers that skip the zeros, and the same exactly-once replay as plain appends."""

from __future__ import annotations

import time

import duckdb
import pytest

from grpokit.serve.decision_log import DecisionLog, read_segment


def _decision(eid: str) -> dict:
    return {"k": "d", "event_id": eid, "ts": time.time(), "policy_version": "v", "arm": "live", "context": "{}",
            "action_code": 0, "action_label": "none", "propensity": 0.5, "deferred": False}


def _count(store) -> tuple[int, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    finally:
        con.close()


def _logged(tmp_path, preallocate: int, prefix: str, n: int):
    """(store, wal dir, started log) after ``n`` acknowledged single decisions ``<prefix><k>``."""
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=3600, preallocate_bytes=preallocate)
    log.recover()
    log.start()
    for k in range(n):
        log.submit([_decision(f"{prefix}{k}")]).result(timeout=5)
    return store, wal, log


def test_segment_grows_by_zero_filled_chunks_and_reads_back(tmp_path):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    chunk = 4096
    log = DecisionLog(store, wal, flush_interval_s=3600, preallocate_bytes=chunk)
    log.recover()
    log.start()
    seg = sorted(wal.glob("seg-*.wal"))[-1]
    sizes, ahead = [], []
    for k in range(60):
        log.submit([_decision(f"e{k:03d}")]).result(timeout=5)
        sizes.append(seg.stat().st_size)
        ahead.append(seg.stat().st_size - log._size)
    logical = log._size
    assert logical > 2 * chunk  # the writes crossed several chunks
    assert min(ahead) >= chunk // 2  # always at least half a chunk of zeros ahead of the writes
    assert len(set(sizes)) < 60 // 4  # the size changed only when a chunk was added, not at every write
    data = seg.read_bytes()
    assert data[logical:] == b"\0" * (len(data) - logical) and data[logical - 1:logical] == b"\n"
    records, torn = read_segment(seg)
    assert [r["event_id"] for r in records] == [f"e{k:03d}" for k in range(60)] and not torn
    log.stop()
    assert list(wal.glob("seg-*.wal")) == []  # a clean stop moves everything and removes the empty current one
    assert _count(store) == (60, 60)


def test_crash_replay_of_a_preallocated_segment_is_exactly_once(tmp_path):
    store, wal, log = _logged(tmp_path, 8192, "d", 40)
    log._unlock()  # a crash: the threads die without flushing (the kernel drops the lock)
    seg = sorted(wal.glob("seg-*.wal"))[-1]
    copy = seg.read_bytes()
    assert copy.endswith(b"\0") and copy.count(b"\n") == 40
    log2 = DecisionLog(store, wal)
    info = log2.recover()
    log2._unlock()
    assert info["records"] == 40 and info["inserted"] == 40 and info["torn"] == 0
    # the same segment again, with a torn unacknowledged line before the zero tail: dropped, nothing twice
    text = copy.rstrip(b"\0")
    (wal / "seg-000000000001.wal").write_bytes(text + b'{"k":"d","event_id":"torn"' + b"\0" * 5000)
    log3 = DecisionLog(store, wal)
    info = log3.recover()
    assert info["torn"] == 1 and info["inserted"] == 0
    log3._unlock()
    assert _count(store) == (40, 40)


def test_a_zero_run_before_later_lines_is_skipped(tmp_path):
    # a machine crash can leave an unacknowledged write's blocks unwritten (zeros) before later lines
    path = tmp_path / "seg-000000000007.wal"
    path.write_bytes(b'{"k":"d","event_id":"a"}\n' + b"\0" * 300 + b'{"k":"d","event_id":"b"}\n'
                     + b"\0" * 200 + b"\n" + b'{"k":"d","event_id":"c"}\n' + b"\0" * 1024)
    records, torn = read_segment(path)
    assert [r["event_id"] for r in records] == ["a", "b", "c"] and not torn


def test_plain_appends_when_preallocation_is_off(tmp_path):
    store, wal, log = _logged(tmp_path, 0, "p", 10)
    seg = sorted(wal.glob("seg-*.wal"))[-1]
    assert seg.stat().st_size == log._size and seg.read_bytes().count(b"\n") == 10
    log.stop()
    assert _count(store) == (10, 10)


def test_rotation_across_chunks_keeps_every_record_once(tmp_path):
    # small segments rotate under concurrent writers; each closed one holds its zero tail
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=0.05, poll_interval_s=0.05, segment_max_bytes=4096,
                      preallocate_bytes=2048, writers=3)
    log.recover()
    log.start()
    futs = [log.submit([_decision(f"r{k}") for k in range(i * 5, i * 5 + 5)]) for i in range(100)]
    for f in futs:
        f.result(timeout=10)
    log.stop()
    assert _count(store) == (500, 500)


def test_negative_preallocation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="preallocate_bytes"):
        DecisionLog(tmp_path / "s.duckdb", tmp_path / "wal", preallocate_bytes=-1)
