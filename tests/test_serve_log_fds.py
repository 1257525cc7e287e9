"""The write-ahead log fsyncs each group on its segment's own descriptor; a segment rotated while
fsyncs run on it is closed by the last of them: no descriptor leaks, every record lands once."""

from __future__ import annotations

import os
import threading
import time

import duckdb
import pytest

from grpokit.serve.decision_log import DecisionLog

pytestmark = pytest.mark.serve


def _decision(eid: str) -> dict:
    return {"k": "d", "event_id": eid, "ts": time.time(), "policy_version": "v", "arm": "live",
            "context": {"a": 1.0}, "action_code": 0, "action_label": "none", "propensity": 0.5,
            "probabilities": [0.5, 0.5], "deferred": False}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_rotations_under_running_fsyncs_close_every_descriptor(tmp_path):
    store, wal = tmp_path / "s.duckdb", tmp_path / "wal"
    log = DecisionLog(store, wal, flush_interval_s=0.05, poll_interval_s=0.05, segment_max_bytes=4096,
                      group_commit_ms=0, writers=4)
    log.recover()
    before = _open_fds()
    log.start()

    def client(c: int):
        for k in range(100):
            log.submit([_decision(f"c{c}-{k}")]).result(timeout=30)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.acked == 600
    log.stop()
    assert log._closing == {} and log._inflight == {}
    assert _open_fds() <= before  # the lock file and every segment descriptor are closed
    con = duckdb.connect(str(store), read_only=True)
    n, nd = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    n_segs = con.execute("SELECT count(*) FROM serve_segments").fetchone()[0]
    con.close()
    assert (n, nd) == (600, 600) and n_segs > 5
