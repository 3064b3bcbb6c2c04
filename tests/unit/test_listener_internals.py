"""The listener's building blocks, and the uvicorn, httptools and uvloop internals it relies on.

listener/protocol.py subclasses uvicorn's HttpToolsProtocol and listener/handshake.py subclasses
uvloop's SSLProtocol; pyproject.toml pins both to the versions checked here. If an upgrade changes
what these tests pin, they fail loudly here rather than the listener failing quietly in production.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl

import httptools
import pytest
import uvicorn
import uvloop.loop
from prometheus_client import CollectorRegistry, generate_latest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from iam_proxy.audit.metrics import EXTRA_CELLS, Board
from iam_proxy.core.errors import ConfigError
from iam_proxy.listener import counters
from iam_proxy.listener.counters import ListenerCounters
from iam_proxy.listener.guard import Guard, LogBudget
from iam_proxy.listener.handshake import WatchedTLS, classify
from iam_proxy.listener.ledger import ConnectionLedger
from iam_proxy.settings.limits import ListenerLimits
from iam_proxy.settings import parse_settings

from test_settings import minimal

# ---------------------------------------------------------------- what the subclasses rely on


def test_uvicorn_httptools_protocol_has_what_the_guarded_protocol_uses():
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters) == [
        "self", "config", "server_state", "app_state", "_loop"]
    for name in ("connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete", "on_message_complete", "_unset_keepalive_if_required", "_should_upgrade",
                 "handle_websocket_upgrade", "_unsupported_upgrade_warning"):
        assert callable(getattr(HttpToolsProtocol, name)), name
    cycle_init = inspect.signature(RequestResponseCycle.__init__).parameters
    assert "expect_100_continue" in cycle_init
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    assert "self.headers.append" in inspect.getsource(HttpToolsProtocol.on_header)
    source = inspect.getsource(RequestResponseCycle)
    for attribute in ("self.disconnected", "self.response_started", "self.response_complete",
                      "self.waiting_for_100_continue", "self.message_event"):
        assert attribute in source, attribute
    assert "self.read_paused" in inspect.getsource(FlowControl)


def test_uvicorn_takes_a_protocol_factory_as_its_http_option():
    sentinel = object()
    config = uvicorn.Config(app=lambda *a: None, http=sentinel)  # type: ignore[arg-type]
    config.load()
    assert config.http_protocol_class is sentinel
    assert config.ssl is None


def test_httptools_stops_at_an_exception_raised_in_a_callback_and_keeps_it_as_context():
    class Stop(Exception):
        pass

    class Callbacks:
        bodies = 0

        def on_headers_complete(self):
            raise Stop

        def on_body(self, body):
            self.bodies += 1

    callbacks = Callbacks()
    parser = httptools.HttpRequestParser(callbacks)
    with pytest.raises(httptools.HttpParserCallbackError) as excinfo:
        parser.feed_data(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
    assert isinstance(excinfo.value, httptools.HttpParserError)
    assert isinstance(excinfo.value.__context__, Stop)
    assert callbacks.bodies == 0  # nothing after the refused head is parsed


def test_uvloop_ssl_protocol_takes_a_waiter_and_a_handshake_timeout():
    async def build() -> None:
        loop = asyncio.get_running_loop()
        uvloop.loop.SSLProtocol(loop, asyncio.Protocol(), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
                                loop.create_future(), server_side=True, ssl_handshake_timeout=1.0)

    uvloop.run(build())
    assert issubclass(WatchedTLS, uvloop.loop.SSLProtocol)


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("limits, where", [
    ({"header_timeout_seconds": 0}, "listeners.limits.header_timeout_seconds"),
    ({"body_idle_timeout_seconds": -1}, "listeners.limits.body_idle_timeout_seconds"),
    ({"max_uri_bytes": 0}, "listeners.limits.max_uri_bytes"),
    ({"max_header_count": "many"}, "listeners.limits.max_header_count"),
    ({"max_connections_per_client": 0}, "listeners.limits.max_connections_per_client"),
    ({"max_header_line_bytes": 100_000}, "listeners.limits"),
    ({"header_deadline": 5}, "listeners.limits.header_deadline"),
])
def test_bad_limits_are_config_errors_naming_the_key(limits, where):
    config = minimal()
    config["listeners"] = {"limits": limits}
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(config)
    assert str(excinfo.value).startswith(f"{where}:")


def test_limits_have_safe_defaults():
    limits = parse_settings(minimal()).listeners.limits
    assert limits == ListenerLimits(header_timeout_seconds=10, body_idle_timeout_seconds=30, max_uri_bytes=8192,
                                    max_header_line_bytes=16384, max_header_count=100, max_header_bytes=65536,
                                    max_connections_per_client=256)


# ---------------------------------------------------------------- ledger, log budget, counters


def test_the_ledger_refuses_at_the_limit_and_returns_slots():
    ledger = ConnectionLedger(2)
    assert ledger.admit("10.0.0.1") and ledger.admit("10.0.0.1")
    assert not ledger.admit("10.0.0.1")
    assert ledger.admit("10.0.0.2")
    ledger.release("10.0.0.1")
    assert ledger.open("10.0.0.1") == 1
    assert ledger.admit("10.0.0.1")
    for _ in range(2):
        ledger.release("10.0.0.1")
    assert ledger.open("10.0.0.1") == 0
    assert "10.0.0.1" not in ledger._open  # no entry kept for an address with nothing open


def test_the_log_budget_bounds_lines_and_says_how_many_it_left_out(caplog):
    now = [0.0]
    budget = LogBudget(lines=2, window=10, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="iam_proxy.listener"):
        for i in range(5):
            budget.warning("refused %d", i)
        now[0] = 10.0
        budget.warning("refused %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 1", "refused 5 (3 similar lines left out before this one)"]


def test_counters_of_every_worker_are_exported_as_one():
    assert len(counters.LISTENERS) * (len(counters.REFUSALS) + len(counters.HANDSHAKE_FAILURES)) <= EXTRA_CELLS
    board = Board(2)
    first, second = ListenerCounters(board, 0), ListenerCounters(board, 1)
    first.refused("proxy", "header_timeout")
    second.refused("proxy", "header_timeout")
    second.handshake_failed("proxy", "certificate_revoked")
    registry = CollectorRegistry()
    first.register(registry)
    text = generate_latest(registry).decode()
    assert 'iam_proxy_listener_refusals_total{listener="proxy",reason="header_timeout"} 2.0' in text
    assert 'iam_proxy_tls_handshake_failures_total{listener="proxy",reason="certificate_revoked"} 1.0' in text
    assert 'iam_proxy_listener_refusals_total{listener="admin",reason="header_timeout"} 0.0' in text


def test_listener_cells_do_not_touch_the_audit_rows():
    board = Board(2)
    ListenerCounters(board, 1).refused("admin", "connection_limit")
    assert not any(board.cells[:2 * board.row_cells])


def test_the_guard_counts_a_refused_connection():
    guard = Guard("proxy", ListenerLimits(max_connections_per_client=1), ListenerCounters(Board()))
    assert guard.admit(("10.0.0.9", 1000))
    assert not guard.admit(("10.0.0.9", 1001))
    guard.release(("10.0.0.9", 1000))
    assert guard.admit(("10.0.0.9", 1002))
    assert guard.counters.total("proxy", "refused:connection_limit") == 1


# ---------------------------------------------------------------- handshake reasons


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = code, message
    return exc


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, reason)
    exc.reason, exc.library = reason, "SSL"
    return exc


@pytest.mark.parametrize("exc, reason", [
    (_verify_error(10, "certificate has expired"), "certificate_expired"),
    (_verify_error(23, "certificate revoked"), "certificate_revoked"),
    (_verify_error(20, "unable to get local issuer certificate"), "certificate_untrusted"),
    (_verify_error(26, "unsuitable certificate purpose"), "certificate_wrong_usage"),
    (_verify_error(7, "certificate signature failure"), "certificate_invalid"),
    (_ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "certificate_missing"),
    (_ssl_error("HTTP_REQUEST"), "not_tls"),
    (_ssl_error("UNSUPPORTED_PROTOCOL"), "protocol_version"),
    (_ssl_error("NO_SHARED_CIPHER"), "no_shared_cipher"),
    (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "other"),
    (ssl.SSLEOFError(8, "EOF"), "closed"),
    (ConnectionAbortedError("handshake is taking longer"), "timeout"),
    (ConnectionResetError(), "closed"),
    (None, "closed"),
    (ValueError("odd"), "other"),
])
def test_handshake_failures_are_classified(exc, reason):
    label, detail = classify(exc)
    assert label == reason
    assert label in counters.HANDSHAKE_FAILURES
    assert detail


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_a_responses_head_leaves_with_what_follows_it():
    """uvicorn writes a response's head and body separately; the client gets them in one send. Only
    the head is held: the rest of a streamed response is not kept waiting."""
    from iam_proxy.listener.protocol import _HeadWithBody

    async def scenario():
        raw = _RecordingTransport()
        transport = _HeadWithBody(raw, asyncio.get_running_loop())
        transport.hold_next = True  # a request's head has arrived
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert raw.writes == []
        transport.write(b"ok")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]  # at once, not a turn later
        transport.write(b"chunk")  # nothing held: straight through
        assert raw.writes[-1] == b"chunk"
        transport.hold_next = True
        transport.write(b"a head whose body comes later")
        await asyncio.sleep(0)  # leaves at the next turn of the loop
        assert raw.writes[-1] == b"a head whose body comes later"
        transport.hold_next = True
        transport.write(b"last words")
        transport.close()  # what was held goes out before the close
        assert raw.writes[-1] == b"last words" and raw.closed
        transport.hold_next = True
        transport.write(b"dropped")
        transport.abort()
        await asyncio.sleep(0)
        assert raw.writes[-1] == b"last words" and raw.aborted
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's

    asyncio.run(scenario())
