"""A proxy loads only what its configuration uses: rego-cpp (regopy), wasmtime and ldap3 take about
28 MB in every process (docs/performance.md#memory), and the default configuration (OPA's library,
bearer tokens) needs none of them."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from support import PYTHON, REPO

OPTIONAL = ("regopy", "wasmtime", "ldap3")

PROBE = """
import asyncio, json, sys
from iam_proxy.app import Proxy
from iam_proxy.settings.loading import load_settings
import iam_proxy.cli, iam_proxy.server

async def main():
    proxy = Proxy(load_settings(sys.argv[1]))
    await proxy.start()
    await proxy.stop()

asyncio.run(main())
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (OPTIONAL,)


def _loaded(config: dict, tmp_path) -> list[str]:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([PYTHON, "-c", PROBE, str(path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine,loaded", [("auto", []), ("embedded", ["regopy"]), ("opa-wasm", ["wasmtime"])])
def test_a_started_proxy_has_loaded_only_the_engine_it_uses(proxy_config, tmp_path, engine, loaded):
    proxy_config["policy"]["engine"] = engine  # auto: opa-lib, which make test builds
    assert _loaded(proxy_config, tmp_path) == loaded


def test_a_configured_directory_loads_ldap3(proxy_config, tmp_path):
    proxy_config["directories"] = [{"id": "corp", "urls": ["ldap://127.0.0.1:1"], "allow_cleartext_on_loopback": True,
                                    "user_base_dn": "ou=people,dc=example,dc=org"}]
    proxy_config["enrichers"] = {"groups": {"type": "ldap", "directory": "corp"}}
    assert _loaded(proxy_config, tmp_path) == ["ldap3"]
