"""Typed configs: pydantic models loaded from YAML with `yaml.safe_load` and `--set a.b=c` overrides.

Unknown keys are errors naming the key's path and the closest valid key; wrong types name the field.
YAML tags that would construct Python objects are refused (the loader is a `SafeLoader`). Anchors and
aliases are bounded: a document whose aliases expand past MAX_NODES nodes ("billion laughs") is refused
before anything walks it, and values echoed in error messages are cut short.
"""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clipdistill.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


MAX_NODES = 200_000  # nodes of a document with every alias expanded; real configs have a few hundred
MAX_BYTES = 8 << 20  # a config file larger than this is not a config
_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11's Repr takes none
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring = _REPR.maxother = 80


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses documents whose aliases expand past MAX_NODES nodes, or that refer to
    themselves. PyYAML shares an aliased node instead of copying it, so loading a "billion laughs" is cheap,
    but whatever walks the result afterwards (validation, error messages, json dumps) pays the expanded size."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise ConfigError(f"YAML alias refers to a node that contains it (line {node.start_mark.line + 1}): "
                          "recursive structures are not allowed in configs")
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, open_) + _expanded_size(v, memo, open_) for k, v in node.value)
    else:
        size = 1
    open_.discard(key)
    if size > MAX_NODES:
        raise ConfigError(f"YAML anchors/aliases expand to more than {MAX_NODES:,} nodes (line "
                          f"{node.start_mark.line + 1}): refused (an alias bomb?)")
    memo[key] = size
    return size


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the bounded safe loader; every failure is a one-line ConfigError."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (BoundedLoader is a SafeLoader)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{where}: YAML tags that construct objects are not allowed ({e.problem})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {_short(str(e), 400)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def short_repr(value: Any) -> str:
    """A bounded repr for error messages (a huge or deeply shared value must not be printed whole)."""
    return _short(_REPR.repr(value), 200)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is too large for a config (limit {MAX_BYTES:,})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None
    data = safe_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], parsed c). The value is parsed as YAML so `1e-3`, `true`, `[1,2]` work."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.load(raw, Loader=BoundedLoader) if raw.strip() else ""  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for item in overrides or []:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys of the (sub)model addressed by loc, for 'did you mean' hints."""
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return list(getattr(model, "model_fields", {}))
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return []
        model = sub
    return list(getattr(model, "model_fields", {}))


MAX_PROBLEMS = 8  # problems listed per refused config; the rest are counted
MAX_VALID = 12  # valid keys suggested for an unknown key that resembles none of them


def _problem(cls: type[BaseModel], e: dict[str, Any]) -> str:
    """One line for one pydantic error: the key's dotted path and what is wrong; the offending value only when it
    is a value, never a whole section (a model-level or missing-key error's input is the entire mapping)."""
    loc = tuple(e["loc"])
    dotted = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        valid = _fields_at(cls, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        if close:
            return f"unknown key {dotted!r}; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?"
        listed = ", ".join(valid[:MAX_VALID]) + (", ..." if len(valid) > MAX_VALID else "")
        return f"unknown key {dotted!r} (valid here: {listed})" if valid else f"unknown key {dotted!r}"
    msg = " ".join(str(e["msg"]).removeprefix("Value error, ").split())  # a validator's message, on one line
    where = dotted or "top level"  # a model-level validator
    if e["type"] == "missing":
        return f"{where}: required key missing"
    value = e.get("input")
    got = "" if isinstance(value, dict) else f" (got {short_repr(value)})"
    return f"{where}: {_short(msg, 300)}{got}"


def format_validation_error(cls: type[BaseModel], err: ValidationError, source: str) -> str:
    """`invalid config (SOURCE): PROBLEM` for one problem; otherwise a short list, one line per problem."""
    problems = [_problem(cls, e) for e in err.errors()]
    if len(problems) == 1:
        return f"invalid config ({source}): {problems[0]}"
    more = len(problems) - MAX_PROBLEMS
    lines = [f"invalid config ({source}), {len(problems)} problems:", *(f"  {p}" for p in problems[:MAX_PROBLEMS])]
    return "\n".join(lines + ([f"  ... and {more} more"] if more > 0 else []))


def build_config(cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(cls, err, source)) from None


def load_config(cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Read YAML (optional), apply `--set` overrides, validate into `cls`."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return build_config(cls, data, source=str(path) if path else "--set")


class TeacherModels(StrictModel):
    """The teacher section's one shape in every config: `teacher: {models: [SPEC, ...], <options>}`
    (distill's `TeacherConfig` adds its mode, feature store and scale; finetune / protocol take one SPEC)."""

    models: list[str] = Field(default_factory=list, description="teacher SPECs (zoo grammar)")


def with_out(cfg: M, out: str | Path | None) -> M:
    """The output folder of a verb whose config has an `out` key (finetune, protocol): the `--out` flag, which
    every folder-writing verb takes, wins; without it the config's `out` (YAML or `--set out=`) is used."""
    if out is not None:
        return cfg.model_copy(update={"out": str(out)})
    if getattr(cfg, "out", None) is None:
        raise ConfigError("no output folder: pass --out DIR (or set `out:` in the config)")
    return cfg

