"""Syslog framing without a collector process: RFC 5424 header fields, octet counting, UDP datagrams."""

from __future__ import annotations

import asyncio
import socket

from audit_sample import sample_event
from iam_proxy.settings.audit import SyslogSink
from iam_proxy.audit.sinks.syslog import SyslogAuditSink


def test_octet_counted_frames_count_utf8_bytes():
    sink = SyslogAuditSink(SyslogSink(type="syslog", host="127.0.0.1", port=514, hostname="proxy-1"))
    events = [sample_event(identity={"username": "jürgen\n"}), sample_event(outcome="denied")]
    (payload,) = sink.encode(events)
    frames, rest = [], payload
    while rest:
        length, _, rest = rest.partition(b" ")
        frames.append(rest[: int(length)])
        rest = rest[int(length):]
    assert len(frames) == 2
    first = frames[0].decode()
    assert first.startswith("<110>1 2026-11-26T05:00:00.123456Z proxy-1 iam-proxy ")  # 13*8 + 6
    assert f'[iam@32473 id="{events[0]["decision_id"]}" outcome="allowed"]' in first
    assert frames[1].startswith(b"<108>1 ")  # denied: warning
    assert "\n" not in first


def test_udp_sends_one_datagram_per_event():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    sink = SyslogAuditSink(SyslogSink(type="syslog", host="127.0.0.1", port=port, transport="udp"))
    events = [sample_event(), sample_event()]

    async def send() -> None:
        await sink.send(sink.encode(events))
        await sink.close()

    asyncio.run(send())
    datagrams = [receiver.recv(65536), receiver.recv(65536)]
    receiver.close()
    assert all(d.startswith(b"<110>1 ") for d in datagrams)
    assert {e["decision_id"] for e in events} == {d.split(b'id="')[1].split(b'"')[0].decode() for d in datagrams}
