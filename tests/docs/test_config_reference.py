"""docs/configuration-reference.md is what the settings model generates (so the two cannot drift);
every key is in it, with an example where the docs' configuration blocks give one; `iam-proxy config
schema` prints a JSON Schema that validates a real config."""

from __future__ import annotations

import json

import jsonschema
import yaml

from iam_proxy.config_descriptions import DESCRIPTIONS
from iam_proxy.config_reference import _Sections, documented_examples, field_descriptions, render_markdown
from iam_proxy.settings import Settings
from iam_proxy.settings.sessions import SessionSettings
from support import REPO, run_cli


def test_the_reference_is_generated_from_the_model():
    page = (REPO / "docs" / "configuration-reference.md").read_text()
    assert page == render_markdown(Settings), "run `iam-proxy docs` (make docs) and commit docs/"


def test_every_sessions_key_is_documented_with_a_description():
    page = render_markdown(Settings)
    described = field_descriptions(SessionSettings)
    for key in SessionSettings.model_fields:
        assert f"| `{key}` |" in page
        assert described.get(key), f"sessions.{key} has no description"
    assert "## authenticators.<name> (type: oidc_session)" in page
    assert "## authenticators.<name> (type: introspection)" in page
    assert "| `refresh_before_expiry_seconds` |" in page and "| `login_timeout_seconds` |" in page


def test_every_key_has_a_description_and_the_table_names_only_real_keys():
    sections = _Sections()
    sections.visit(Settings, "")
    undescribed, known = [], set()
    for model in sections.order:
        described = field_descriptions(model)
        undescribed += [f"{sections.titles[model] or 'top level'}.{key}" for key in model.model_fields
                        if not described.get(key)]
        known |= {f"{cls.__name__}.{key}" for cls in model.__mro__ for key in model.model_fields}
    assert not undescribed, f"describe these (Field(description=...), a comment, or config_descriptions.py): " \
                            f"{undescribed}"
    assert not set(DESCRIPTIONS) - known, f"config_descriptions.py names keys that do not exist: " \
                                          f"{sorted(set(DESCRIPTIONS) - known)}"


def test_config_schema_validates_a_config_and_refuses_an_unknown_key():
    out = run_cli("config", "schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    config = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    jsonschema.validate(config, schema)
    bad = dict(config, sessions={"secrets": "typo"})
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
    assert errors and "secrets" in str(errors[0].message)
    assert schema["$defs"]["SessionSettings"]["properties"]["revocation_file"]["description"]


def test_examples_come_from_top_level_configuration_blocks_and_follow_the_type(tmp_path):
    (tmp_path / "page.md").write_text(
        "```yaml\nlisteners:\n  workers: 3\nauthenticators:\n  api:\n    type: apikey\n    header: X-Key\n"
        "  web:\n    type: jwt\n    providers: [corp]\nroutes:\n  - id: r1\n    upstream: http://b:8080\n```\n"
        "A fragment, not a configuration from the top, is not read:\n"
        "```yaml\n- id: fragment\n  upstream: http://elsewhere\n```\n")
    examples = documented_examples(Settings, tmp_path)
    assert examples[("listeners", "workers")] == 3
    assert examples[("authenticators.<name> (type: apikey)", "header")] == "X-Key"
    assert examples[("authenticators.<name> (type: jwt)", "providers")] == ["corp"]
    assert examples[("routes[]", "id")] == "r1" and examples[("routes[]", "upstream")] == "http://b:8080"
    page = render_markdown(Settings, tmp_path)
    assert "| `workers` | integer | `1` | `3` |" in page


def test_the_reference_shows_the_docs_examples():
    examples = documented_examples(Settings)
    assert len(examples) > 200, len(examples)
    assert ("routes[]", "upstream") in examples and ("audit", "sinks") not in examples  # objects have sections
