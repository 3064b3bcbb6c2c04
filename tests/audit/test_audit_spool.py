"""The spool on its own: cursors survive restarts, half-written records are cut, overflow policies."""

from __future__ import annotations

import orjson

from iam_proxy.settings.audit import SpoolSettings
from iam_proxy.audit.metrics import AuditMetrics
from iam_proxy.audit.spool import Spool


def _record(i: int, pad: int = 200) -> bytes:
    return orjson.dumps({"decision_id": f"id-{i}", "pad": "x" * pad}) + b"\n"


def _ids(records) -> list[str]:
    return [orjson.loads(r)["decision_id"] for r in records]


def test_cursor_survives_restart_and_segments_are_collected(tmp_path):
    settings = SpoolSettings(dir=tmp_path, segment_bytes=4096, max_bytes=64 * 1024)
    spool = Spool(settings, ["a", "b"], AuditMetrics(["a", "b"]))
    for i in range(100):
        assert spool.append(_record(i))
    reader = spool.readers["a"]
    records, cursor = reader.read_batch(30)
    assert _ids(records) == [f"id-{i}" for i in range(30)]
    reader.commit(cursor, len(records))
    segments_before = len(spool.sizes)
    spool.close()

    spool = Spool(settings, ["a", "b"], AuditMetrics(["a", "b"]))
    assert spool.readers["a"].pending == 70 and spool.readers["b"].pending == 100
    records, cursor = spool.readers["a"].read_batch(1000)
    assert _ids(records) == [f"id-{i}" for i in range(30, 100)]
    spool.readers["a"].commit(cursor, len(records))
    assert len(spool.sizes) == segments_before  # b still needs them
    records, cursor = spool.readers["b"].read_batch(1000)
    assert len(records) == 100
    spool.readers["b"].commit(cursor, len(records))
    assert len(spool.sizes) == 1  # only the active segment is left
    spool.close()


def test_half_written_record_is_cut_at_restart(tmp_path):
    settings = SpoolSettings(dir=tmp_path, segment_bytes=4096, max_bytes=64 * 1024)
    spool = Spool(settings, ["a"], AuditMetrics(["a", "b"]))
    spool.append(_record(1))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    with segment.open("ab") as f:
        f.write(b'{"decision_id":"half')  # a kill in the middle of a write
    spool = Spool(settings, ["a"], AuditMetrics(["a", "b"]))
    spool.append(_record(2))
    records, _ = spool.readers["a"].read_batch(10)
    assert _ids(records) == ["id-1", "id-2"]
    spool.close()


def test_block_refuses_and_drop_oldest_counts(tmp_path):
    metrics = AuditMetrics(["s"])
    block = Spool(SpoolSettings(dir=tmp_path / "b", segment_bytes=4096, max_bytes=16 * 1024, overflow="block"),
                  ["s"], metrics)
    accepted = [block.append(_record(i)) for i in range(200)]
    assert accepted[0] and not accepted[-1] and not block.has_room()
    block.close()

    drop = Spool(SpoolSettings(dir=tmp_path / "d", segment_bytes=4096, max_bytes=16 * 1024,
                               overflow="drop_oldest"), ["s"], metrics)
    assert all(drop.append(_record(i)) for i in range(200))
    dropped = metrics.value("s", "dropped:drop_oldest")
    records, _ = drop.readers["s"].read_batch(1000)
    assert dropped > 0 and len(records) + dropped == 200
    assert _ids(records)[-1] == "id-199" and drop.total_bytes <= 16 * 1024
    drop.close()
