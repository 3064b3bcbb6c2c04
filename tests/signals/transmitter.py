"""A Shared Signals transmitter for tests: a real HTTP server (its own thread) serving
/.well-known/ssf-configuration, its JWKS, the stream management endpoint and a poll endpoint
(RFC 8936), and issuing real signed Security Event Tokens (RFC 8417) to push (RFC 8935) or queue."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from support import free_port

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
POLL = "urn:ietf:rfc:8936"


class Transmitter:
    def __init__(self, audience: str = "iam-proxy-signals", token: str = "transmitter-secret") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.audience = audience
        self.token = token  # the receiver's bearer token for the management and poll endpoints
        self.key = RSAKey.generate_key(2048, private=True)
        self.kid = "ssf-1"
        self.streams: list[dict[str, Any]] = []
        self.queue: dict[str, str] = {}  # jti -> SET, until acknowledged
        self.acked: list[str] = []
        self.set_errors: dict[str, Any] = {}
        self.hits: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ SETs

    def issue(self, event_type: str, subject: dict[str, Any], *, event_timestamp: float | None = None,
              typ: str = "secevent+jwt", aud: str | None = None, key: RSAKey | None = None,
              issuer: str | None = None, jti: str | None = None, **payload: Any) -> tuple[str, str]:
        jti = jti or uuid.uuid4().hex
        claims = {"iss": issuer or self.issuer, "aud": aud or self.audience, "iat": int(time.time()), "jti": jti,
                  "sub_id": subject,
                  "events": {event_type: {"event_timestamp": event_timestamp or time.time(), **payload}}}
        header = {"alg": "RS256", "kid": self.kid, "typ": typ}
        return jti, jwt.encode(header, claims, key or self.key)

    def push(self, endpoint: str, token: str, authorization: str | None = "Bearer push-secret",
             content_type: str = "application/secevent+jwt") -> httpx.Response:
        headers = {"content-type": content_type, **({"authorization": authorization} if authorization else {})}
        return httpx.post(endpoint, content=token, headers=headers, timeout=10)

    def enqueue(self, jti: str, token: str) -> None:
        with self._lock:
            self.queue[jti] = token

    # ------------------------------------------------------------------ HTTP

    def _config(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": f"{self.url}/jwks", "spec_version": "1_0",
                "delivery_methods_supported": ["urn:ietf:rfc:8935", POLL],
                "configuration_endpoint": f"{self.url}/ssf/stream"}

    def _handler(self):
        transmitter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("authorization") == f"Bearer {transmitter.token}":
                    return True
                self._json(401, {"error": "unauthorized"})
                return False

            def _body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_GET(self) -> None:
                transmitter.hits.append(f"GET {self.path}")
                if self.path == "/.well-known/ssf-configuration":
                    self._json(200, transmitter._config())
                elif self.path == "/jwks":
                    key = {**transmitter.key.as_dict(private=False), "kid": transmitter.kid, "alg": "RS256", "use": "sig"}
                    self._json(200, {"keys": [key]})
                elif self.path == "/ssf/stream" and self._authorized():
                    self._json(200, transmitter.streams)
                elif not self.path.startswith("/ssf/stream"):
                    self._json(404, {})

            def do_POST(self) -> None:
                transmitter.hits.append(f"POST {self.path}")
                if self.path == "/ssf/stream" and self._authorized():
                    request = self._body()
                    stream_id = uuid.uuid4().hex
                    delivery = dict(request["delivery"])
                    if delivery["method"] == POLL:
                        delivery["endpoint_url"] = f"{transmitter.url}/ssf/poll/{stream_id}"
                    stream = {"stream_id": stream_id, "iss": transmitter.issuer, "aud": transmitter.audience,
                              "delivery": delivery, "events_requested": request.get("events_requested", []),
                              "events_delivered": request.get("events_requested", [])}
                    transmitter.streams.append(stream)
                    self._json(201, stream)
                elif self.path.startswith("/ssf/poll/") and self._authorized():
                    request = self._body()
                    with transmitter._lock:
                        for jti in request.get("ack", []):
                            transmitter.acked.append(jti)
                            transmitter.queue.pop(jti, None)
                        for jti, err in (request.get("setErrs") or {}).items():
                            transmitter.set_errors[jti] = err
                            transmitter.queue.pop(jti, None)
                        sets = dict(list(transmitter.queue.items())[:request.get("maxEvents", 100)])
                    self._json(200, {"sets": sets, "moreAvailable": False})

        return Handler
