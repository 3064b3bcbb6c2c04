"""The configuration reference and JSON Schema, generated from the settings model.

The model is the single source: each key's type and default come from pydantic, its description from
`Field(description=...)` or, where the model says it in a comment (`# ...` above the key or after it),
from that comment. A key's example is the first value the docs' YAML blocks give it (those blocks
are run by tests as written, so the examples are configurations that work).
`docs/configuration-reference.md` is this module's output (`iam-proxy docs`), and a test fails when
it is stale; `iam-proxy config schema` prints the JSON Schema for editors.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from .config_descriptions import DESCRIPTIONS

_FIELD_LINE = re.compile(r"^    (\w+)\s*:")


def field_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """Each field's description: Field(description=...), else the comments the class body (or a base
    class's) gives it, else the table in config_descriptions.py; a discriminator says what it selects."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            found.update({k: v for k, v in _source_comments(cls, model).items() if v})
    for name, info in model.model_fields.items():
        if info.description:
            found[name] = info.description
        elif not found.get(name):
            found[name] = next((DESCRIPTIONS[f"{cls.__name__}.{name}"] for cls in model.__mro__
                                if f"{cls.__name__}.{name}" in DESCRIPTIONS), "")
        if name == "type" and not found[name] and typing.get_origin(info.annotation) is Literal:
            found[name] = f"selects this kind: `{typing.get_args(info.annotation)[0]}`"
    return found


def _source_comments(cls: type[BaseModel], model: type[BaseModel]) -> dict[str, str]:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#") and line.startswith("    #"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_LINE.match(line)
        if match and match.group(1) in model.model_fields:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            found[match.group(1)] = " ".join([*pending, trailing]).strip()
        pending = []
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _tag(model: type[BaseModel]) -> str | None:
    """The discriminator value of a union member (`type: jwt`), if it has one."""
    field = model.model_fields.get("type")
    if field is not None and typing.get_origin(field.annotation) is Literal:
        return str(typing.get_args(field.annotation)[0])
    return None


class _Sections:
    def __init__(self) -> None:
        self.titles: dict[type[BaseModel], str] = {}
        self.order: list[type[BaseModel]] = []

    def visit(self, model: type[BaseModel], title: str) -> None:
        if model in self.titles:
            return
        self.titles[model] = title
        self.order.append(model)
        for name, info in model.model_fields.items():
            origin = typing.get_origin(info.annotation)
            members = _models_in(info.annotation)
            for member in members:
                key = f"{title}.{name}" if title else name
                if origin is list or (origin in (Union, types.UnionType) and _is_list(info.annotation)):
                    key += "[]"
                elif origin is dict:
                    key += ".<name>"
                tag = _tag(member) if len(members) > 1 else None
                self.visit(member, f"{key} (type: {tag})" if tag else key)


def _is_list(annotation: Any) -> bool:
    return any(typing.get_origin(arg) is list for arg in typing.get_args(annotation))


def _type_name(annotation: Any, sections: _Sections) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        title = sections.titles[annotation] or "Top level"
        return f"[{_tag(annotation) or 'object'}](#{_anchor(title)})"
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a, sections) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0], sections)}"
    if origin is dict:
        return f"map of name to {_type_name(args[1], sections)}"
    if origin is typing.Annotated:
        return _type_name(args[0], sections)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", SecretStr: "secret"}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(info: Any) -> str:
    if info.is_required():
        return "**required**"
    value = info.default if info.default is not PydanticUndefined else info.default_factory()
    if isinstance(value, BaseModel):
        return "(see section)"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, Enum):
        value = value.value
    return f"`{json.dumps(value, default=_plain)}`"


def _plain(value: Any) -> Any:
    """A default that holds models (a list of rules) as the YAML a user would write."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    return str(value)


DOCS = Path(__file__).resolve().parent.parent / "docs"
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)
_EXAMPLE_WIDTH = 48


def documented_examples(settings_model: type[BaseModel], docs: Path = DOCS,
                        sections: _Sections | None = None) -> dict[tuple[str, str], Any]:
    """(section title, key) -> the first value a YAML block of the docs gives that key. A block is read
    when it is a configuration from the top (its keys are top-level keys); others are fragments."""
    found: dict[tuple[str, str], Any] = {}
    if sections is None:
        sections = _Sections()
        sections.visit(settings_model, "")
    for page in sorted(docs.rglob("*.md")) if docs.is_dir() else []:
        for block in _YAML_BLOCK.findall(page.read_text()):
            try:
                document = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(document, dict) and document and document.keys() <= settings_model.model_fields.keys():
                _collect(settings_model, document, sections, found)
    return found


def _collect(model: type[BaseModel], value: dict[str, Any], sections: _Sections,
             found: dict[tuple[str, str], Any]) -> None:
    title = sections.titles[model]
    for name, info in model.model_fields.items():
        if name not in value:
            continue
        given = value[name]
        members = _models_in(info.annotation)
        if not members:
            found.setdefault((title, name), given)
            continue
        items = given if isinstance(given, list) else list(given.values()) if isinstance(given, dict) and \
            typing.get_origin(info.annotation) is dict else [given]
        for item in items:
            if not isinstance(item, dict):
                continue
            member = next((m for m in members if _tag(m) is None or _tag(m) == item.get("type")), None)
            if member is not None and member in sections.titles:
                _collect(member, item, sections, found)


def _example(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, default=str, separators=(", ", ": "))
    if len(text) > _EXAMPLE_WIDTH:
        text = text[:_EXAMPLE_WIDTH - 1] + "…"
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def render_markdown(settings_model: type[BaseModel], docs: Path = DOCS) -> str:
    sections = _Sections()
    sections.visit(settings_model, "")
    examples = documented_examples(settings_model, docs, sections)
    out = ["# Configuration reference", "",
           "Generated from the settings model by `iam-proxy docs` (or `make docs`); do not edit by hand.",
           "`iam-proxy config schema` prints the same model as JSON Schema, for editors that validate YAML.",
           "Every string may use `${NAME}` or `${NAME:-default}` (environment variables). How the pieces fit",
           "together: [configuration.md](configuration.md). The example column shows the first value the",
           "docs' configuration blocks give a key (each block runs in a test as written).", ""]
    for model in sections.order:
        title = sections.titles[model]
        out += [f"## {title or 'Top level'}", ""]
        doc = inspect.cleandoc(model.__doc__ or "") if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
        if doc:
            out += [" ".join(doc.split()), ""]
        described = field_descriptions(model)
        out += ["| key | type | default | example (from the docs) | description |", "|---|---|---|---|---|"]
        for name, info in model.model_fields.items():
            cells = [f"`{name}`", _type_name(info.annotation, sections), _default(info),
                     _example(examples.get((title, name))), described.get(name, "").replace("|", "\\|")]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def json_schema(settings_model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema, with the comment-given descriptions added."""
    schema = settings_model.model_json_schema()
    described: dict[str, dict[str, str]] = {}
    sections = _Sections()
    sections.visit(settings_model, "")
    for model in sections.order:
        described[model.__name__] = field_descriptions(model)
    for name, definition in [(settings_model.__name__, schema), *schema.get("$defs", {}).items()]:
        for key, prop in definition.get("properties", {}).items():
            text = described.get(name, {}).get(key)
            if text and "description" not in prop:
                prop["description"] = text
    return schema
