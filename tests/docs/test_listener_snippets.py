"""The `listeners.limits` snippet of docs/configuration.md, through the real settings loader, and
the same values refused one at a time when they are not positive."""

from __future__ import annotations

import pytest

from test_config_snippets import load

from iam_proxy.errors import ConfigError
from iam_proxy.listener.limits import ListenerLimits


def test_listener_limits(tmp_path, monkeypatch):
    limits = load("config-listener-limits", tmp_path, monkeypatch).listeners.limits
    assert limits == ListenerLimits()  # the snippet spells out the defaults
    assert (limits.header_timeout_seconds, limits.max_connections_per_client) == (10, 256)


@pytest.mark.parametrize("key", list(ListenerLimits.model_fields))
def test_each_limit_must_be_positive(tmp_path, monkeypatch, key):
    def zero(fragment: dict) -> dict:
        fragment["listeners"]["limits"][key] = 0
        return fragment

    with pytest.raises(ConfigError, match=rf"^listeners\.limits\.{key}:"):
        load("config-listener-limits", tmp_path, monkeypatch, wrap=zero)
