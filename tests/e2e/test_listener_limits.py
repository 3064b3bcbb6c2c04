"""Slow and oversized clients (issue 13 item 3), against the real proxy process: a request head sent
a byte at a time, a body that stalls, heads over each size limit, and more connections from one
address than allowed. Requests are raw bytes on a socket; each refusal is checked on the wire (status,
`Connection: close`, then the close), in /metrics and in the proxy's log.
"""

from __future__ import annotations

import json
import time

import pytest

from rawconn import connect, read_until_closed, stall, trickle
from rawhttp import _read_response, request_bytes, send_raw
from support import audit_event, base_config, copy_policies

LIMITS = {"header_timeout_seconds": 1, "body_idle_timeout_seconds": 1, "max_uri_bytes": 512,
          "max_header_line_bytes": 1024, "max_header_count": 20, "max_header_bytes": 4096,
          "max_connections_per_client": 64}
GET_PUBLIC = request_bytes("GET", "/public/hello", [("User-Agent", "slow-client/1.0 " + "x" * 60)])


@pytest.fixture(scope="module")
def limited(upstream, tmp_path_factory):
    from support import DevIssuer, ProxyProcess

    tmp = tmp_path_factory.mktemp("limits")
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", copy_policies(tmp / "policies"))
    config["listeners"]["limits"] = LIMITS
    proxy = ProxyProcess(config, tmp).wait_ready()
    yield proxy
    proxy.stop()


def refusals(proxy, reason: str) -> float:
    return proxy.metric("iam_proxy_listener_refusals_total", f'listener="proxy",reason="{reason}"')


def assert_refused(proxy, answer: bytes, status: int, reason: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"\r\nconnection: close" in head.lower()
    assert json.loads(body)["reason"] == reason


def logged(proxy, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proxy.process.logs():
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- the header deadline


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_deadline(limited):
    before = refusals(limited, "header_timeout")
    # 120 bytes at one per 50 ms would take 6 s; the deadline is 1 s
    outcome = trickle(limited.port, GET_PUBLIC, every=0.05)
    assert outcome.status == 408
    assert_refused(limited, outcome.answer, 408, "header_timeout")
    assert 0.9 < outcome.seconds < 2.5
    assert outcome.sent < len(GET_PUBLIC)
    assert refusals(limited, "header_timeout") == before + 1
    assert logged(limited, "proxy listener refused 127.0.0.1:")


def test_a_connection_that_never_sends_is_closed_at_the_header_deadline(limited):
    with connect(limited.port) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, timeout=5) == b""  # nothing was asked, so nothing is answered
        assert 0.9 < time.monotonic() - started < 2.5


def test_the_deadline_of_a_keep_alive_request_starts_with_its_first_byte(limited):
    keep_alive = GET_PUBLIC.replace(b"Connection: close", b"Connection: keep-alive")
    with connect(limited.port) as sock:
        sock.sendall(keep_alive)
        assert _read_response(sock).status == 200
        time.sleep(1.5)  # idle between requests is the keep-alive timeout's business, not the deadline's
        started = time.monotonic()
        for byte in keep_alive:  # the second head, a byte every 50 ms
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
            if time.monotonic() - started > 1.2:
                break
        answer = read_until_closed(sock, timeout=5)
    assert_refused(limited, answer, 408, "header_timeout")


def test_a_slow_head_within_the_deadline_is_served(limited):
    outcome = trickle(limited.port, GET_PUBLIC, every=0.2, chunk=40)  # 3 sends over 0.6 s
    assert outcome.status == 200, outcome.answer[:200]


# ---------------------------------------------------------------- the body idle deadline


def test_a_stalled_body_is_cut_off_at_the_body_idle_deadline(limited):
    before = refusals(limited, "body_timeout")
    head = request_bytes("POST", "/public/upload", [("Content-Type", "application/octet-stream"),
                                                     ("Content-Length", "1000"), ("X-Request-Id", "stalled-body")])
    outcome = stall(limited.port, head + b"x" * 100, wait=5)
    assert_refused(limited, outcome.answer, 408, "body_timeout")
    assert 0.9 < outcome.seconds < 2.5
    assert refusals(limited, "body_timeout") == before + 1
    # this request had reached the app: it is audited, as a client that went away
    event = audit_event(limited, "stalled-body")
    assert (event["reason"], event["status"]) == ("client_disconnected", 499)


def test_a_request_answered_before_its_body_stalled_gets_no_second_answer(limited):
    head = request_bytes("POST", "/api/upload", [("Content-Type", "application/octet-stream"),
                                                  ("Content-Length", "1000")])
    keep_alive = head.replace(b"Connection: close", b"Connection: keep-alive")
    outcome = stall(limited.port, keep_alive + b"x" * 100, wait=5)  # no token: 401 before the body is read
    assert outcome.status == 401
    assert outcome.answer.count(b"HTTP/1.1 ") == 1  # the stalled body is cut without a second answer
    assert 0.9 < outcome.seconds < 2.5


def test_a_body_that_keeps_coming_is_not_cut_by_the_idle_deadline(limited):
    body = b"y" * 12
    head = request_bytes("POST", "/public/upload", [("Content-Type", "application/octet-stream"),
                                                     ("Content-Length", str(len(body)))])
    with connect(limited.port) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 2):  # 6 sends, 0.4 s apart: 2.4 s in all, never 1 s of silence
            time.sleep(0.4)
            sock.sendall(body[i:i + 2])
        answer = read_until_closed(sock, timeout=10)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


# ---------------------------------------------------------------- size limits


@pytest.mark.parametrize("request_, status, reason", [
    (request_bytes("GET", "/public/" + "a" * 600, []), 414, "uri_too_long"),
    (request_bytes("GET", "/public/x", [("X-Big", "b" * 1100)]), 431, "header_line_too_long"),
    (request_bytes("GET", "/public/x", [(f"X-H{i}", "v") for i in range(25)]), 431, "too_many_headers"),
    (request_bytes("GET", "/public/x", [(f"X-H{i}", "c" * 900) for i in range(6)]), 431, "headers_too_large"),
    (b"GET /public/x HTTP/1.1\r\nHost: proxy.test\r\nX-Endless: " + b"d" * 200_000, 431, "headers_too_large"),
    (b"GET /public/x HTTP/1.1\r\nHost proxy.test\r\n\r\n", 400, "malformed"),
], ids=["uri", "header-line", "header-count", "header-bytes", "unfinished-header", "malformed"])
def test_oversized_or_malformed_heads_are_refused(limited, request_, status, reason):
    before = refusals(limited, reason)
    outcome = stall(limited.port, request_, wait=5)
    assert_refused(limited, outcome.answer, status, reason)
    assert refusals(limited, reason) == before + 1
    assert logged(limited, f": {reason} ({status})")


def test_heads_within_the_limits_are_served(limited):
    headers = [(f"X-H{i}", "c" * 500) for i in range(6)] + [("X-Line", "e" * 1000)]
    response = send_raw(limited.port, request_bytes("GET", "/public/" + "a" * 400, headers))
    assert response.status == 200


def test_a_refused_head_never_reaches_the_app(limited):
    request_id = "refused-at-the-listener"
    outcome = stall(limited.port, request_bytes("GET", "/public/" + "a" * 600, [("X-Request-Id", request_id)]))
    assert outcome.status == 414
    served = send_raw(limited.port, request_bytes("GET", "/public/ok", [("X-Request-Id", "served-after")]))
    assert served.status == 200
    audit_event(limited, "served-after")  # the audit file is written up to the later request...
    assert not any(e.get("request_id") == request_id for e in limited.audit_events())  # ...without the refused one


# ---------------------------------------------------------------- connections per client address


@pytest.fixture
def few_connections(proxy_factory, proxy_config):
    proxy_config["listeners"]["limits"] = {"max_connections_per_client": 3}
    return proxy_factory(proxy_config)


def test_connections_per_client_address_are_limited(few_connections):
    proxy = few_connections
    held = [connect(proxy.port) for _ in range(3)]
    try:
        time.sleep(0.2)
        with connect(proxy.port) as fourth:
            answer = read_until_closed(fourth, timeout=5)
        assert_refused(proxy, answer, 429, "connection_limit")
        # another address is not affected
        assert send_raw(proxy.port, request_bytes("GET", "/public/x", []), source="127.0.0.2").status == 200
        held.pop().close()
        time.sleep(0.2)
        # a slot freed is a slot taken again, and the slots of closed connections are all returned
        assert send_raw(proxy.port, request_bytes("GET", "/public/x", [])).status == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    for _ in range(5):
        assert send_raw(proxy.port, request_bytes("GET", "/public/x", [])).status == 200
    assert proxy.metric("iam_proxy_listener_refusals_total", 'listener="proxy",reason="connection_limit"') == 1
    assert logged(proxy, "proxy listener refused 127.0.0.1:")


def test_refusals_of_every_worker_are_counted_on_the_admin_listener(proxy_factory, proxy_config):
    proxy_config["listeners"]["workers"] = 2
    proxy = proxy_factory(proxy_config)
    for _ in range(20):  # the kernel spreads the connections over both workers' sockets
        assert stall(proxy.port, b"GET /public/x HTTP/1.1\r\nHost proxy.test\r\n\r\n", wait=5).status == 400
    assert proxy.metric("iam_proxy_listener_refusals_total", 'listener="proxy",reason="malformed"') == 20
