"""The request context: identifiers made for every request."""

import uuid

from iam_proxy.context import random_uuid


def test_decision_ids_are_random_version_4_uuids():
    ids = {random_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
