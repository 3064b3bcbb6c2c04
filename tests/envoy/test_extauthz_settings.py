"""The `ext_authz` section: docs/envoy.md's fragments load; a bad one names its key."""

from __future__ import annotations

import pytest
import yaml

from snippets import snippet

from iam_proxy.errors import ConfigError
from iam_proxy.settings import parse_settings

BASE = {"authenticators": {"public": {"type": "anonymous"}},
        "routes": [{"id": "base", "match": {"path": "/zz/**"}, "upstream": "http://127.0.0.1:9",
                    "authenticators": ["public"]}]}


def test_the_documented_fragments_load():
    settings = parse_settings({**BASE, **yaml.safe_load(snippet("ext-authz-config").text),
                               **yaml.safe_load(snippet("ext-authz-opa-envoy-route").text)})
    assert settings.ext_authz.grpc.port == 9191 and settings.ext_authz.http.port == 9192
    assert settings.ext_authz.path_prefix == "/check"
    assert settings.routes[0].policy.path == "envoy/authz/allow"


@pytest.mark.parametrize("section,complaint", [
    ({"grpc": {"port": 9191}}, "trusted_peers"),
    ({"http": {"port": 9192}, "trusted_peers": ["not-a-cidr"]}, "trusted_peers"),
    ({"path_prefix": "check/"}, "path_prefix"),
    ({"grpc": {"port": 9191, "tls": {"cert_file": "/c", "key_file": "/k", "client_auth": "optional",
                                     "client_ca_file": "/ca"}}, "trusted_peers": ["127.0.0.1/32"]}, "grpc.tls"),
    ({"grpc": {"port": 70000}, "trusted_peers": ["127.0.0.1/32"]}, "ext_authz.grpc.port"),
])
def test_a_bad_section_names_the_key(section, complaint):
    with pytest.raises(ConfigError) as error:
        parse_settings({**BASE, "ext_authz": section})
    assert str(error.value).startswith("ext_authz") and complaint in str(error.value)


def test_the_documented_websockets_section_loads():
    settings = parse_settings({**BASE, **yaml.safe_load(snippet("config-websockets").text)})
    assert settings.websockets.recheck_seconds == 30
    with pytest.raises(ConfigError, match="websockets.recheck_seconds"):
        parse_settings({**BASE, "websockets": {"recheck_seconds": 0}})


def test_no_section_serves_nothing():
    settings = parse_settings(BASE)
    assert settings.ext_authz.grpc is None and settings.ext_authz.http is None
