"""Real peers for the audit tests: an rsyslog instance (TCP and TLS inputs writing JSON lines), a
local HTTP collector recording Splunk HEC / _bulk / webhook requests, and a fast load driver."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from support import PYTHON, Process, free_port, wait_for_port

HERE = Path(__file__).resolve().parent
SD_ID = re.compile(rb'iam@32473 id=\\"([0-9a-f-]+)\\"')


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (SAN IP), made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                            "server.pem"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=test-siem-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


RSYSLOG_CONF = """\
global(workDirectory="{d}/work" maxMessageSize="256k"
       parser.escapeControlCharactersOnReceive="off" net.enableDNS="off")
module(load="imtcp" maxSessions="200")
input(type="imtcp" address="127.0.0.1" port="{tcp}" name="tcp" ruleset="siem")
input(type="imtcp" address="127.0.0.1" port="{tls}" name="tls" ruleset="siem"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.CAFile="{ca}" streamDriver.CertFile="{cert}" streamDriver.KeyFile="{key}")
template(name="jsonl" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timestamp" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf") }}
ruleset(name="siem") {{
  action(type="omfile" file="{d}/out/messages.jsonl" template="jsonl") }}
"""


class Rsyslog:
    """Debian's rsyslogd as a test SIEM: TCP and TLS inputs, every message one JSON line."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("rsyslogd") is None and not Path("/usr/sbin/rsyslogd").exists():
            raise RuntimeError("rsyslogd is not installed: run scripts/install-peers.sh (make peers)")
        self.dir = directory
        for sub in ("work", "out"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_ca_and_server_cert(directory / "certs")
        self.tcp_port, self.tls_port = free_port(), free_port()
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(RSYSLOG_CONF.format(d=directory, tcp=self.tcp_port, tls=self.tls_port,
                                                 ca=self.ca, cert=cert, key=key))
        self.output = directory / "out" / "messages.jsonl"
        self.process: Process | None = None
        check = subprocess.run([self._binary(), "-N1", "-f", str(self.conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"rsyslog config invalid: {check.stderr}")

    @staticmethod
    def _binary() -> str:
        return shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"

    def start(self) -> "Rsyslog":
        self.process = Process([self._binary(), "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
                               self.dir / "rsyslogd.log")
        wait_for_port(self.tcp_port, self.process.proc)
        self._wait_tls()
        return self

    def _wait_tls(self, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=1) as raw:
                    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
                    try:
                        tls.unwrap()
                    except (ssl.SSLError, OSError):
                        pass
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            started = time.monotonic()
            self.process.stop(signal.SIGTERM)
            with open(self.dir / "rsyslogd.log", "a") as f:
                f.write(f"[test] rsyslogd stopped after {time.monotonic() - started:.2f}s at {time.time():.3f}\n")
            self.process = None

    def log(self) -> str:
        path = self.dir / "rsyslogd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def messages(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        return [json.loads(line) for line in self.output.read_text(encoding="utf-8").split("\n") if line]

    def wait_messages(self, predicate, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if predicate(messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)

    def wait_ids(self, expected: set[str], timeout: float = 60.0) -> set[str]:
        """Decision ids (from the structured data) seen so far, once all `expected` arrived or at timeout.
        Reads the output incrementally so that polling does not steal the proxy's CPU."""
        seen: set[str] = set()
        offset = 0
        deadline = time.monotonic() + timeout
        while True:
            if self.output.exists():
                with self.output.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1
                offset += end
                seen.update(m.decode() for m in SD_ID.findall(data[:end]))
            if expected <= seen or time.monotonic() > deadline:
                return seen
            time.sleep(0.25)


class Collector:
    """tests/audit/collector.py as a real process: records every request, answers like the real thing."""

    def __init__(self, directory: Path, port: int | None = None, name: str = "collector") -> None:
        self.dir = directory
        self.port = port or free_port()
        self.record = directory / f"{name}-requests.jsonl"
        self.name = name
        self.process: Process | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "Collector":
        self.process = Process([PYTHON, str(HERE / "collector.py"), "--port", str(self.port),
                                "--record", str(self.record)], self.dir / f"{self.name}.log")
        wait_for_port(self.port, self.process.proc)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def wait_requests(self, predicate, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests()
            if predicate(requests) or time.monotonic() > deadline:
                return requests
            time.sleep(0.25)


async def _drive(url: str, paths: list[str], concurrency: int, timeout: float,
                 milestone: tuple[int, threading.Event] | None) -> dict[str, int]:
    statuses: dict[str, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async def worker() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                try:
                    async with s.get(url + "/.iam/auth", headers={"X-Original-URI": path}) as r:
                        await r.read()
                        statuses[path] = r.status
                        if milestone is not None and len(statuses) >= milestone[0]:
                            milestone[1].set()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    statuses[path] = 0
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def drive_forward_auth(url: str, paths: list[str], concurrency: int = 50, timeout: float = 10,
                       milestone: tuple[int, threading.Event] | None = None) -> dict[str, int]:
    """Forward-auth checks (no upstream hop) for each path; path -> status (0 = no answer).
    `milestone` (n, event): the event is set once n answers came back."""
    return asyncio.run(_drive(url, paths, concurrency, timeout, milestone))


def forward_auth_config(base: dict[str, Any]) -> dict[str, Any]:
    """Only the public route, so load tests stay cheap (anonymous, the shipped policy allows it)."""
    config = dict(base)
    config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}  # the test client is the front proxy
    config["routes"] = [r for r in base["routes"] if r["id"] == "public"]
    config["routes"][0] = {**config["routes"][0], "authenticators": ["public"]}
    return config
