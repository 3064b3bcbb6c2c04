"""A real nginx for tests: one foreground process in its own directory, serving the `http {}` body a
test gives it (server blocks, and any http-level directives before them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import Process, wait_for_port

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""


def start_nginx(directory: Path, body: str, ports: list[int]) -> Process:
    """nginx with `body` inside its http block, once every port in `ports` listens."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nginx.conf").write_text(NGINX_CONF.format(dir=directory, body=body))
    process = Process([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(directory), "-e",
                       str(directory / "error.log"), "-c", str(directory / "nginx.conf")], directory / "nginx.log")
    for port in ports:
        wait_for_port(port, process.proc)
    return process
