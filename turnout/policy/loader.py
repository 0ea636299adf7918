"""Load and check a rollout policy: YAML (with line numbers from PyYAML's composer),
JSON Schema (``rollout.schema.json``), then rules a schema cannot say. Every problem is
reported at once, each with file, line and field path."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gates.metrics.builtins import placeholder_problems
from gates.metrics.sources import (
    ENVOY,
    PROMETHEUS,
    SHADOW,
    SHADOW_BUILTINS,
    STREAM_BUILTINS,
    STREAM_ONLY,
)
from turnout.errors import ConfigError
from turnout.policy.model import Policy, build_policy, parse_duration, resolve_samples

SCHEMA_PATH = Path(__file__).with_name("rollout.schema.json")
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ConfigError):
    """A policy with problems; ``problems`` lists each one with its line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Lines:
    """Line numbers (1-based) of every value and key in a composed YAML document."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.values: dict[Path_, int] = {}
        self.keys: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        self.values[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    self.duplicates.append(((*path, key), key_node.start_mark.line + 1))
                seen.add(key)
                self.keys[(*path, key)] = key_node.start_mark.line + 1
                self._walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def line(self, path: Path_) -> int:
        while path:
            if path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), 1)


def _schema_problems(doc: Any, lines: _Lines, file: str) -> list[Problem]:
    problems: list[Problem] = []
    validator = jsonschema.Draft202012Validator(schema())
    for error in validator.iter_errors(doc):
        path: Path_ = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            # Keys may be any YAML scalar (null, numbers): compare them as text.
            for key in sorted(set(error.instance) - allowed, key=str):
                hint = _closest(str(key), allowed)
                problems.append(Problem(file, lines.line((*path, key)), _dotted((*path, key)),
                                        "unknown field" + (f" (did you mean {hint!r}?)"
                                                           if hint else "")))
            continue
        if error.validator == "pattern" and "description" in error.schema:
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    f"{error.instance!r} is invalid: "
                                    f"{error.schema['description']}"))
            continue
        problems.append(Problem(file, lines.line(path), _dotted(path), error.message))
    return problems


def _closest(key: str, options: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.6)
    return match[0] if match else None


def _seconds(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None  # reported by the schema


def _rule_problems(doc: dict[str, Any], lines: _Lines, file: str) -> list[Problem]:
    problems: list[Problem] = []
    spec = doc.get("spec", {})
    steps = spec.get("strategy", {}).get("steps") or []
    previous = 0
    for index, step in enumerate(steps):
        weight = step.get("weight")
        if ("weight" in step) == ("shadow" in step):
            path = ("spec", "strategy", "steps", index)
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    "a step needs either weight (live traffic) or shadow "
                                    "(copies of live requests), not both"
                                    if "weight" in step else
                                    "a step needs either weight (live traffic) or shadow "
                                    "(copies of live requests)"))
        if isinstance(weight, int) and weight <= previous:
            path = ("spec", "strategy", "steps", index, "weight")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    f"weights must increase: {weight} after {previous}"))
        if isinstance(weight, int):
            previous = max(previous, weight)
    metrics = spec.get("gates", {}).get("metrics") or []
    if any("shadow" in step for step in steps) and not any(
            isinstance(m, dict) and m.get("source") == SHADOW for m in metrics):
        index = next(i for i, step in enumerate(steps) if "shadow" in step)
        path = ("spec", "strategy", "steps", index, "shadow")
        problems.append(Problem(file, lines.line(path), _dotted(path),
                                "a shadow step is judged by shadow gates only: add a metric "
                                "with source: shadow (builtin "
                                + " or ".join(SHADOW_BUILTINS) + ")"))
    if steps and steps[-1].get("weight") != 100:
        path = ("spec", "strategy", "steps", len(steps) - 1, "weight")
        problems.append(Problem(file, lines.line(path), _dotted(path),
                                "the last step must be weight 100 (promotion)"))
    age = spec.get("streamMaxAge")
    seconds = _seconds(age) if isinstance(age, str) else None
    if seconds is not None and not 2 <= seconds <= 86400:
        path = ("spec", "streamMaxAge")
        problems.append(Problem(file, lines.line(path), _dotted(path),
                                f"streamMaxAge must be 2s..24h, not {age}"))
    validation = spec.get("validation", {})
    for name, hint in (validation.get("inputs") or {}).items():
        bounds = hint.get("range")
        if isinstance(bounds, list) and len(bounds) == 2 and not bounds[0] < bounds[1]:
            path = ("spec", "validation", "inputs", name, "range")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    f"range must be [low, high) with low < high, not {bounds}"))
    samples = resolve_samples(validation.get("samples"), file)
    if samples and not file.startswith("<") and not Path(samples).is_file():
        path = ("spec", "validation", "samples")
        problems.append(Problem(file, lines.line(path), _dotted(path),
                                f"samples file {samples} does not exist (paths are relative "
                                "to the policy file)"))
    names: set[str] = set()
    for index, metric in enumerate(spec.get("gates", {}).get("metrics") or []):
        base = ("spec", "gates", "metrics", index)
        if ("builtin" in metric) == ("query" in metric):
            problems.append(Problem(file, lines.line(base), _dotted(base),
                                    "give exactly one of 'builtin' or 'query'"))
        if isinstance(metric.get("query"), str):
            path = (*base, "query")
            problems.extend(Problem(file, lines.line(path), _dotted(path), problem)
                            for problem in placeholder_problems(metric["query"]))
        if not any(k in metric for k in ("max", "min", "maxRatio", "minRatio")):
            problems.append(Problem(file, lines.line(base), _dotted(base),
                                    "needs a threshold: max, min, maxRatio or minRatio"))
        if "sequential" in metric and (metric.get("source"), metric.get("builtin")) not in (
                (ENVOY, "error_rate"), (ENVOY, "p50_latency_ms"), (ENVOY, "p99_latency_ms"),
                (SHADOW, "disagreement_rate")):
            path = (*base, "sequential")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    "a sequential test needs source: envoy and builtin "
                                    "error_rate, p50_latency_ms or p99_latency_ms, or "
                                    "source: shadow and builtin disagreement_rate"))
        if (metric.get("source") == SHADOW) != (metric.get("builtin") in SHADOW_BUILTINS):
            path = (*base, "source" if metric.get("source") == SHADOW else "builtin")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    "source shadow answers only the builtins "
                                    + ", ".join(SHADOW_BUILTINS)
                                    if metric.get("source") == SHADOW else
                                    f"{metric['builtin']} comes from shadow steps only: "
                                    "add source: shadow"))
        if metric.get("source", PROMETHEUS) != ENVOY and metric.get("builtin") in STREAM_ONLY:
            path = (*base, "builtin")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    f"{metric['builtin']} comes from Envoy's access-log "
                                    "stream only: add source: envoy"))
        if metric.get("source") == ENVOY and metric.get("builtin") not in STREAM_BUILTINS:
            path = (*base, "source")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    "source envoy answers only the builtins "
                                    + ", ".join(STREAM_BUILTINS)))
        name = metric.get("name")
        if name in names:
            path = (*base, "name")
            problems.append(Problem(file, lines.line(path), _dotted(path),
                                    f"duplicate metric name {name!r}"))
        names.add(name)
    return problems


#: A policy is a few kilobytes; anything much larger is a mistake (or an attack).
MAX_POLICY_BYTES = 256 * 1024
MAX_DEPTH = 32


def _unsafe(text: str, file: str) -> Problem | None:
    """Oversized text, a YAML alias (aliases can expand without bound: a 400-byte "billion
    laughs" builds millions of nodes, or refer to themselves), or nesting deeper than
    MAX_DEPTH (building it recurses: 20,000 levels took 38 s and ended in a RecursionError).
    Found from the event stream, before anything is built."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_POLICY_BYTES:
        return Problem(file, 1, "", f"policy is {size} bytes; at most {MAX_POLICY_BYTES}")
    deep = _flow_depth_exceeded(text)
    if deep is not None:
        return Problem(file, deep, "", f"nested deeper than {MAX_DEPTH} levels (a policy "
                                       "needs about 6)")
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                return Problem(file, event.start_mark.line + 1, "",
                               f"YAML alias *{event.anchor} is not allowed in a policy "
                               "(anchors and aliases can expand without bound)")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:  # building it would recurse that deep
                    return Problem(file, event.start_mark.line + 1, "",
                                   f"nested deeper than {MAX_DEPTH} levels (a policy needs "
                                   "about 6)")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # reported with its line by the parser below
    return None


def _flow_depth_exceeded(text: str) -> int | None:
    """The line where ``[``/``{`` brackets (outside quotes) first nest deeper than
    MAX_DEPTH, found in one pass that stops there: even YAML's scanner is slow on 20,000
    of them. None when they do not."""
    depth, quote, line = 0, "", 1
    for char in text:
        if char == "\n":
            line += 1
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


def load_text(text: str, file: str = "<policy>") -> Policy:
    """Check a policy document; raises :class:`PolicyError` listing every problem."""
    unsafe = _unsafe(text, file)
    if unsafe is not None:
        raise PolicyError([unsafe])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PolicyError([Problem(file, line, "", f"invalid YAML: {exc.problem}")]) from exc
    except yaml.reader.ReaderError as exc:
        # Characters YAML does not allow (control characters, for instance).
        line = text.count("\n", 0, exc.position) + 1
        raise PolicyError([Problem(file, line, "", f"invalid YAML: character "
                                   f"#x{exc.character:04x} is not allowed")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(file, 1, "", f"invalid YAML: {exc}")]) from exc
    if not isinstance(doc, dict):  # an empty file too (found by the fuzz tests)
        raise PolicyError([Problem(file, 1, "", "a policy must be a YAML mapping")])
    lines = _Lines(root)
    problems = [Problem(file, line, _dotted(path), "duplicate key")
                for path, line in lines.duplicates]
    problems += _schema_problems(doc, lines, file)
    # A document of the wrong shape is already reported by the schema.
    with contextlib.suppress(AttributeError, TypeError):
        problems += _rule_problems(doc, lines, file)
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.path)))
    return build_policy(doc, source=file)


def load_file(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, "", f"cannot read: {exc.strerror}")]) from exc
    return load_text(text, str(path))
