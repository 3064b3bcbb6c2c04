"""HTTP collectors: Splunk HTTP Event Collector, Elasticsearch/OpenSearch `_bulk`, a generic webhook.

    splunk_hec    POST <url>/services/collector/event, `Authorization: Splunk <token>`, body: one
                  {"time", "host", "source", "sourcetype", ["index"], "event"} object per event,
                  concatenated; success is HTTP 200 with {"code": 0}. Every request names this sink's
                  channel (`X-Splunk-Request-Channel`); when the token has indexer acknowledgement
                  on, the answer carries an `ackId`, and the batch counts as delivered only once
                  POST <url>/services/collector/ack answers {"acks": {"<ackId>": true}}: indexed, not
                  just received. The wait is part of the attempt (`timeout_seconds`).
    elastic_bulk  POST <url>/_bulk, application/x-ndjson: {"create": {"_index", "_id"}} + document
                  per event. `_id` is the decision_id, so a resent event is refused as a 409 conflict
                  instead of stored twice; 409 counts as delivered, any other item error fails the batch.
    webhook       POST <url>, a JSON array of rendered events; any 2xx is success.

The body is gzip-compressed when `gzip` is on (`Content-Encoding: gzip`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ...core.claims import json_object
from ...settings.audit import HttpSink
from ..render import json_bytes, render
from .syslog import client_tls_context

DEFAULT_INDEX = "iam-proxy-audit"
ACK_POLL_SECONDS = 0.5


class CollectorRefused(Exception):
    """The collector answered, but did not accept the batch."""


def _epoch(timestamp: str | None) -> float | None:
    return datetime.fromisoformat(timestamp).timestamp() if timestamp else None


class HttpAuditSink:
    def __init__(self, settings: HttpSink) -> None:
        self.settings = settings
        self.url = self._endpoint()
        parts = urlsplit(self.url)  # for the log: never a password embedded in the URL
        self.target = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.hostname = socket.gethostname()
        self._session: aiohttp.ClientSession | None = None
        self._headers = {**settings.headers}
        if settings.kind == "splunk_hec" and settings.token is not None:
            self._headers["Authorization"] = f"Splunk {settings.token.get_secret_value()}"
            self._headers["X-Splunk-Request-Channel"] = str(uuid.uuid4())
        elif settings.api_key is not None:
            self._headers["Authorization"] = f"ApiKey {settings.api_key.get_secret_value()}"
        elif settings.username is not None and settings.password is not None:
            pair = f"{settings.username}:{settings.password.get_secret_value()}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._headers["Content-Type"] = ("application/x-ndjson" if settings.kind == "elastic_bulk"
                                         else "application/json")
        if settings.gzip:
            self._headers["Content-Encoding"] = "gzip"

    def _endpoint(self) -> str:
        url, kind = self.settings.url, self.settings.kind
        if kind == "splunk_hec" and not url.endswith("/services/collector/event"):
            return url + "/services/collector/event"
        if kind == "elastic_bulk" and not url.endswith("/_bulk"):
            return url + "/_bulk"
        return url

    # ------------------------------------------------------------------ encoding

    def encode(self, events: list[dict[str, Any]]) -> bytes:
        kind, fmt = self.settings.kind, self.settings.format
        if kind == "splunk_hec":
            parts = []
            for event in events:
                envelope: dict[str, Any] = {"time": _epoch(event.get("timestamp")), "host": self.hostname,
                                            "source": self.settings.source, "sourcetype": self.settings.sourcetype,
                                            "event": render(event, fmt)}
                if self.settings.index:
                    envelope["index"] = self.settings.index
                parts.append(json_bytes(envelope))
            body = b"\n".join(parts)
        elif kind == "elastic_bulk":
            index = self.settings.index or DEFAULT_INDEX
            lines = []
            for event in events:
                document = render(event, fmt)
                if isinstance(document, str):
                    document = {"@timestamp": event.get("timestamp"), "message": document}
                lines.append(json_bytes({"create": {"_index": index, "_id": event["decision_id"]}}))
                lines.append(json_bytes(document))
            body = b"\n".join(lines) + b"\n"
        else:
            body = json_bytes([render(event, fmt) for event in events])
        return gzip.compress(body, compresslevel=5) if self.settings.gzip else body

    # ------------------------------------------------------------------ delivery

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_context = client_tls_context(self.settings.tls) if self.settings.url.startswith("https") else None
            connector = (aiohttp.TCPConnector(limit=4, ssl=ssl_context) if ssl_context
                         else aiohttp.TCPConnector(limit=4))
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds))
        return self._session

    async def _post(self, url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._client().post(url, data=payload, headers=headers) as response:
            return response.status, await response.read()

    async def send(self, payload: bytes) -> None:
        status, body = await self._post(self.url, payload, self._headers)
        if self.settings.kind == "splunk_hec":
            answer = json_object(body)
            if status != 200 or answer.get("code") != 0:
                raise CollectorRefused(f"HEC answered {status} code={answer.get('code')}")
            if "ackId" in answer:
                await self._indexed(answer["ackId"])
        elif self.settings.kind == "elastic_bulk":
            if status != 200:
                raise CollectorRefused(f"_bulk answered {status}")
            answer = json_object(body)
            if answer.get("errors"):
                failed = [item for item in answer.get("items", [])
                          for result in item.values() if result.get("status") not in (200, 201, 409)]
                if failed:
                    raise CollectorRefused(f"_bulk refused {len(failed)} item(s), first status "
                                           f"{next(iter(failed[0].values())).get('status')}")
        elif not 200 <= status < 300:
            raise CollectorRefused(f"webhook answered {status}")

    async def _indexed(self, ack_id: int) -> None:
        """Wait until HEC says the batch `ack_id` is indexed (indexer acknowledgement)."""
        url = self.url.removesuffix("/event") + "/ack"
        headers = {**self._headers, "Content-Type": "application/json"}
        headers.pop("Content-Encoding", None)
        while True:
            status, body = await self._post(url, json_bytes({"acks": [ack_id]}), headers)
            if status != 200:
                raise CollectorRefused(f"HEC ack answered {status}")
            if json_object(body).get("acks", {}).get(str(ack_id)) is True:
                return
            await asyncio.sleep(ACK_POLL_SECONDS)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
