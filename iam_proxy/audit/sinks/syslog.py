"""Syslog: RFC 5424 messages over TCP with octet counting (RFC 6587), over TLS (RFC 5425), or UDP.

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [iam@32473 id="<decision_id>" outcome=".."] MSG

MSG is the rendered event (JSON on one line, or CEF). Octet counting frames a message by its byte
length, so nothing inside MSG can end it early. Plain syslog has no acknowledgement; see
`SyslogSink.confirm_seconds` for how a batch is judged delivered.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Any

from ...settings.audit import ClientTLSSettings, SyslogSink
from ..render import render, to_bytes

SD_ID = "iam@32473"
SEVERITY = {"allowed": 6, "denied": 4, "error": 3}  # informational, warning, error


def client_tls_context(settings: ClientTLSSettings | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings and settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings is not None and settings.cert_file is not None:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


class SyslogAuditSink:
    def __init__(self, settings: SyslogSink) -> None:
        self.settings = settings
        hostname = settings.hostname or socket.gethostname() or "-"
        self._prefix = f"{settings.app_name} {os.getpid()} {settings.msgid}"
        self._hostname = "".join(c for c in hostname if "!" <= c <= "~")[:255] or "-"
        self._tls = client_tls_context(settings.tls) if settings.transport == "tls" else None
        self.target = f"{settings.transport}://{settings.host}:{settings.port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None

    # ------------------------------------------------------------------ framing

    def message(self, event: dict[str, Any]) -> bytes:
        severity = SEVERITY.get(event.get("outcome", ""), 5)
        pri = self.settings.facility * 8 + severity
        sd = f'[{SD_ID} id="{_sd_value(str(event.get("decision_id", "")))}" ' \
             f'outcome="{_sd_value(str(event.get("outcome", "")))}"]'
        header = f"<{pri}>1 {event.get('timestamp') or '-'} {self._hostname} {self._prefix} {sd} ".encode()
        body = to_bytes(render(event, self.settings.format))
        room = self.settings.max_message_bytes - len(header)
        if len(body) > room and "input" in event:
            # The policy input is the bulk of a large event; the rest still fits.
            body = to_bytes(render({**event, "input": None, "input_omitted": "too large for syslog"},
                                   self.settings.format))
        return header + body[:room]

    def encode(self, events: list[dict[str, Any]]) -> list[bytes]:
        messages = [self.message(e) for e in events]
        if self.settings.transport == "udp":
            return messages
        return [b"".join(f"{len(m)} ".encode() + m for m in messages)]

    # ------------------------------------------------------------------ delivery

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None and not writer.is_closing() and not reader.at_eof():
            return reader, writer
        await self._drop_connection()
        server_hostname = None
        if self._tls is not None:
            server_hostname = (self.settings.tls.server_name if self.settings.tls else None) or self.settings.host
        self._reader, self._writer = await asyncio.open_connection(
            self.settings.host, self.settings.port, ssl=self._tls, server_hostname=server_hostname)
        return self._reader, self._writer

    async def send(self, payload: list[bytes]) -> None:
        if self.settings.transport == "udp":
            await self._send_udp(payload)
            return
        reader, writer = await self._connect()
        try:
            writer.write(payload[0])
            await writer.drain()
            if self.settings.confirm_seconds:
                # A collector that stopped may have thrown away what we just wrote without any error
                # on our side; it shows up as EOF or a reset within moments. Only a connection that is
                # still up confirm_seconds later counts the batch as delivered.
                try:
                    data = await asyncio.wait_for(reader.read(4096), self.settings.confirm_seconds)
                except asyncio.TimeoutError:
                    # On a busy loop the timer and the peer's FIN can become ready together.
                    await asyncio.sleep(0)
                    if reader.at_eof() or writer.is_closing():
                        raise ConnectionResetError("the syslog collector closed the connection") from None
                    return
                if not data:
                    raise ConnectionResetError("the syslog collector closed the connection")
        except BaseException:
            await self._drop_connection()
            raise

    async def _send_udp(self, payload: list[bytes]) -> None:
        if self._udp is None or self._udp.is_closing():
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(self.settings.host, self.settings.port))
        for message in payload:
            self._udp.sendto(message)

    async def _drop_connection(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            pass

    async def close(self) -> None:
        await self._drop_connection()
        if self._udp is not None:
            self._udp.close()
