"""The listener's own defences: what a connection may cost before the app ever sees a request.

uvicorn parses HTTP/1.1 with httptools but bounds neither the time a client may take to send its
request head (a slowloris holds a connection open a byte at a time) nor the head's size. Every
listener therefore runs one protocol of ours, a subclass of uvicorn's:

    limits.py     `listeners.limits`: the deadlines and sizes (settings model)
    protocol.py   GuardedHttp: header deadline, body idle deadline, request-line and header limits,
                  answered with 408/414/431/400 and `Connection: close`; the client certificate in
                  the scope (ASGI TLS extension)
    handshake.py  TLS done by uvloop's own SSL protocol, watched: a failed or abandoned handshake is
                  counted and logged with the peer's address and the reason
    ledger.py     open connections per client address, refused at the limit
    counters.py   the refusal and handshake counters, shared by the worker processes, on /metrics
    guard.py      one listener's Guard: the protocol factory uvicorn is given, tying them together

A refusal here happens before any request reaches the app, so no audit event is written for it; it
is counted (`iam_proxy_listener_refusals_total`, `iam_proxy_tls_handshake_failures_total`) and
logged instead (docs/security.md).

This module imports nothing, so settings.py can import `limits` without pulling in uvicorn.
"""
