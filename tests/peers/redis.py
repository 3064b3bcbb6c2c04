"""A real redis-server for tests: no persistence, on a free loopback port, restartable on that port."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import Process, free_port, wait_for_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.process = Process([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(self.tmp)], self.tmp / "redis.log")
        wait_for_port(self.port, self.process.proc)

    def stop(self) -> None:
        self.process.stop()
