"""A local HTTP collector for the audit tests: Splunk HEC, Elasticsearch `_bulk` and a webhook.

Every request is recorded (method, path, headers, gzip-decoded body) as one JSON line in --record.
`POST /_control {"fail": N}` makes the next requests answer N until `{"fail": 0}`.
`POST /_control {"ack": true}` turns on HEC indexer acknowledgement: events are answered with an
`ackId`, and `/services/collector/ack` says it is indexed only while `{"indexed": true}` (the default).
"""

from __future__ import annotations

import argparse
import gzip
import json

from aiohttp import web

STATE = {"fail": 0, "ack": False, "indexed": True, "next_ack": 0}


async def handle(request: web.Request) -> web.Response:
    raw = await request.read()
    if request.path == "/_control":
        STATE.update(json.loads(raw))
        return web.json_response({"ok": True})
    # aiohttp already inflates a gzip body; Content-Length still tells the size on the wire.
    body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    record = {"method": request.method, "path": request.path, "headers": dict(request.headers),
              "body": body.decode("utf-8"), "wire_bytes": int(request.headers.get("Content-Length", -1)),
              "answered": STATE["fail"] or 200}
    with open(request.app["record"], "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if STATE["fail"]:
        return web.json_response({"error": "failing on purpose"}, status=STATE["fail"])
    if request.path.endswith("/services/collector/event"):
        if not STATE["ack"]:
            return web.json_response({"text": "Success", "code": 0})
        if not request.headers.get("X-Splunk-Request-Channel"):
            return web.json_response({"text": "Data channel is missing", "code": 10}, status=400)
        STATE["next_ack"] += 1
        return web.json_response({"text": "Success", "code": 0, "ackId": STATE["next_ack"]})
    if request.path.endswith("/services/collector/ack"):
        acks = json.loads(body)["acks"]
        return web.json_response({"acks": {str(a): STATE["indexed"] for a in acks}})
    if request.path.endswith("/_bulk"):
        lines = [json.loads(line) for line in body.decode().splitlines() if line]
        items = [{"create": {"_index": action["create"]["_index"], "_id": action["create"]["_id"],
                             "status": 201, "result": "created"}} for action in lines[0::2]]
        return web.json_response({"took": 1, "errors": False, "items": items})
    return web.json_response({"received": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["record"] = args.record
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
