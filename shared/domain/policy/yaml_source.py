"""A YAML file read once: its content as plain data for pydantic to validate, the line of every part of
it, and validation errors turned into messages that say where, like `p.yaml:12: maxDuration of rule 'r' …`.

Only string scalars become `str`. Every other scalar (numbers, booleans, null, dates, `18:00`, custom
tags) stays a `YamlScalar` holding its tag and its text as written, so that a string field refuses
`2` or `null` instead of coercing it, and a time of day reads `18:00` rather than YAML 1.1's 1080.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from ..decision import Outcome
from ..errors import PolicyError

STR: Final = "tag:yaml.org,2002:str"
INT: Final = "tag:yaml.org,2002:int"
BOOL: Final = "tag:yaml.org,2002:bool"
NULL: Final = "tag:yaml.org,2002:null"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: ten times faster
_TRUE = ("true", "yes", "on", "y")

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class YamlScalar:
    """A scalar that is not a string, as written: its resolved tag and its text."""

    tag: str
    text: str

    @property
    def is_null(self) -> bool:
        return self.tag == NULL


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """A mapping key that is not a string, or that repeats one (whose value is then ignored)."""

    line: int
    kind: str  # "not_string_key" or "duplicate_key"
    key: str | None  # the repeated key


class Refusal(ValueError):
    """A value refused by a validator, as a message template the file's wording completes: `{what}` names
    the value (e.g. "maxDuration of rule 'r'"), `{value}` is the value and `{where}`, `{parent}` and the
    keyword fields fill in the rest. `at` points below the refused value (a field of a refused mapping)."""

    def __init__(self, template: str, *, at: Loc = (), **fields: object) -> None:
        super().__init__(template)
        self.template = template
        self.at = at
        self.fields = fields


class YamlSource:
    """One composed YAML file: `data` to validate and the line of any location in it.

    Invalid YAML and an empty file raise PolicyError at once. Aliases share one value, so an alias bomb
    is never expanded, and the composed tree is walked without recursion, so nesting as deep as libyaml
    allows is no problem either.
    """

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise PolicyError([f"{name}:{line}: invalid YAML: {exc.problem or exc.context}"]) from None
        except yaml.YAMLError as exc:
            raise PolicyError([f"{name}:1: invalid YAML: {exc}"]) from None
        if root is None:
            raise PolicyError([f"{name}:1: the file is empty"])
        self.root: yaml.Node = root
        # By the id of the mapping in `data`: an aliased mapping's problems belong to every place it is used.
        self.key_problems: dict[int, list[KeyProblem]] = {}
        self.data: Any = self._plain_data(root)

    def _plain_data(self, root: yaml.Node) -> Any:
        made: dict[int, Any] = {}
        pending: list[tuple[yaml.Node, Any]] = []

        def value_of(node: yaml.Node) -> Any:
            if isinstance(node, yaml.ScalarNode):
                return node.value if node.tag == STR else YamlScalar(node.tag, node.value)
            if id(node) not in made:
                made[id(node)] = {} if isinstance(node, yaml.MappingNode) else []
                pending.append((node, made[id(node)]))
            return made[id(node)]

        data = value_of(root)
        while pending:
            node, value = pending.pop()
            if isinstance(value, list):
                value.extend(value_of(item) for item in node.value)
                continue
            for key, item in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag != STR:
                    problem = KeyProblem(line_of(key), "not_string_key", None)
                elif key.value in value:
                    problem = KeyProblem(line_of(key), "duplicate_key", key.value)
                else:
                    value[key.value] = value_of(item)
                    continue
                self.key_problems.setdefault(id(value), []).append(problem)
        return data

    def _walk(self, loc: Loc) -> tuple[yaml.Node, yaml.Node | None]:
        """The deepest node along `loc`, and the key it was found under (None when it is a list item)."""
        node, key = self.root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                found = next((kv for kv in node.value if kv[0].tag == STR and kv[0].value == part), None)
                if found is None:
                    break
                key, node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                key, node = None, node.value[part]
            else:
                break
        return node, key

    def node(self, loc: Loc) -> yaml.Node:
        return self._walk(loc)[0]

    def line(self, loc: Loc) -> int:
        return line_of(self._walk(loc)[0])

    def key_line(self, loc: Loc) -> int:
        """The line of the key `loc` ends with (where an unknown key is written), else of its value."""
        node, key = self._walk(loc)
        return line_of(key if key is not None else node)

    def plain(self, loc: Loc) -> Any:
        """The part at `loc` as yaml.safe_load would give it."""
        return yaml.constructor.SafeConstructor().construct_document(self.node(loc))


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1 if node.start_mark is not None else 1


class Findings:
    """The problems found in one file, each with its line, raised together as one PolicyError: this
    file's in line order, after any reported by a file it names (as they came). On one line, problems
    with the keys of a mapping come first, then missing keys, then the rest as they were found."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._own: list[tuple[int, int, str]] = []
        self._others: list[str] = []

    def __len__(self) -> int:
        return len(self._own) + len(self._others)

    def add(self, line: int, message: str, kind: str = "") -> None:
        self._own.append((line, _RANKS.get(kind, 2), message))

    def extend_from_other_file(self, errors: list[str]) -> None:
        self._others.extend(errors)

    def raise_if_any(self) -> None:
        if self:
            own = sorted(self._own, key=lambda found: found[:2])
            raise PolicyError([*self._others, *(f"{self.source}:{line}: {message}" for line, _, message in own)])


# How errors read when the wording has nothing more specific: `{what}` is the value's label, `{parent}`
# the label of the mapping or list holding it, `{key}` the last part of its location.
DEFAULT_TEMPLATES: Final = {
    "missing": "{parent} is missing '{key}'",
    "extra_forbidden": "unknown key '{key}' in {parent}{hint}",
    "not_string_key": "keys in {what} must be strings",
    "duplicate_key": "duplicate key '{key}' in {parent}",
    "list_type": "{what} must be a list",
    "model_type": "{what} must be a mapping",
    "dict_type": "{what} must be a mapping",
    "too_short": "{what} must not be empty",
}
_AT_KEY = ("extra_forbidden", "not_string_key", "duplicate_key")
_RANKS: Final = {"extra_forbidden": 0, "not_string_key": 0, "duplicate_key": 0, "missing": 1}


class Wording:
    """How one kind of file names its parts in messages. A location's shape is the location with list
    positions as `#` (and free mapping keys as `*`, by `shape`); `mappings` gives the keys of every
    mapping whose keys are checked (None: free keys), `templates` what to say for (shape, error type)."""

    mappings: Mapping[Loc, Collection[str] | None] = {}
    templates: Mapping[tuple[Loc, str], str] = {}

    def __init__(self, source: YamlSource) -> None:
        self.source = source

    def shape(self, loc: Loc) -> Loc:
        return tuple("#" if isinstance(part, int) else part for part in loc)

    def label(self, loc: Loc) -> str:
        return str(loc[-1]) if loc else "the file"

    def fields(self, loc: Loc) -> dict[str, object]:
        """Named values templates may use at this location, besides what, parent, key and value."""
        return {}

    def message(
        self, loc: Loc, kind: str, template: str | None = None, extra: Mapping[str, object] | None = None
    ) -> str:
        """The message for an error of this kind at `loc`: the template given, else the wording's."""
        shape = self.shape(loc)
        if template is None:
            template = self.templates.get((shape, kind)) or DEFAULT_TEMPLATES.get(kind, "{what}: " + kind)
        parent = loc[:-1] if loc[-1:] != ("[key]",) else loc[:-2]
        key = loc[-2] if loc[-1:] == ("[key]",) else (loc[-1] if loc else "")
        fields: dict[str, object] = {"key": key, "hint": ""}
        if "{what}" in template:
            fields["what"] = self.label(loc)
        if "{parent}" in template:
            fields["parent"] = self.label(parent)
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(key), list(self.mappings.get(self.shape(parent)) or ()), 1, 0.7)
            fields["hint"] = f" (did you mean '{close[0]}'?)" if close else ""
        return template.format(**{**fields, **self.fields(loc), **(extra or {})})

    def key_problems(self) -> list[tuple[int, str, str]]:
        """The non-string and duplicate keys of the mappings this file's shape checks key by key, wherever
        such a mapping is used."""
        found = []
        for shape in self.mappings:
            for loc, value in _reach(self.source.data, shape, ()):
                for problem in self.source.key_problems.get(id(value), ()):
                    at = loc if problem.key is None else (*loc, problem.key)
                    found.append((problem.line, self.message(at, problem.kind), problem.kind))
        return found

    def explain(self, error: ErrorDetails) -> tuple[int, str, str]:
        """One pydantic error as (line, message, kind)."""
        loc: Loc = tuple(error["loc"])
        refusal = error.get("ctx", {}).get("error")
        if isinstance(refusal, Refusal):
            loc = (*loc, *refusal.at)
            message = self.message(loc, error["type"], refusal.template, {"value": error["input"], **refusal.fields})
        else:
            message = self.message(loc, error["type"])
        at_key = error["type"] in _AT_KEY or loc[-1:] == ("[key]",)
        return (self.source.key_line(loc) if at_key else self.source.line(loc)), message, error["type"]


class Shape(BaseModel):
    """Base of the models a file's shape is made of: unknown keys are refused and nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


def keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a mapping of this shape may have, as written in the file."""
    return tuple(field.alias or name for name, field in model.model_fields.items())


def _reach(value: Any, shape: Loc, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    """Every location in the data with this shape (`#` any list item, `*` any mapping key), and its value."""
    if not shape:
        yield loc, value
    elif shape[0] == "#" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _reach(item, shape[1:], (*loc, i))
    elif shape[0] == "*" and isinstance(value, dict):
        for key, item in value.items():
            yield from _reach(item, shape[1:], (*loc, key))
    elif isinstance(value, dict) and shape[0] in value:
        yield from _reach(value[shape[0]], shape[1:], (*loc, shape[0]))


def validate(
    model: type[M], wording: Wording, findings: Findings, context: Mapping[str, object] | None = None
) -> M | None:
    """The file's data as `model`, or None with every problem (keys included) added to `findings`."""
    for problem in wording.key_problems():
        findings.add(*problem)
    try:
        return model.model_validate(wording.source.data, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            findings.add(*wording.explain(error))
        return None


# ---------------------------------------------------------------- values every file kind reads


def text(value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise Refusal("{what} must be a string")
    if not value.strip():
        raise Refusal("{what} must not be empty")
    return value


def whole_number(minimum: int = 0, maximum: int | None = None) -> Callable[[object], int]:
    """A validator of plain decimal integers (not 0x10, 1_000, -1 or 18:00) within bounds."""

    def validate(value: object) -> int:
        if not (isinstance(value, YamlScalar) and value.tag == INT and value.text.isdigit()):
            raise Refusal("{what} must be a whole number")
        number = int(value.text)
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise Refusal("{what} is {number}; it must be {bound}", number=number, bound=bound)
        return number

    return validate


def flag(value: object) -> bool:
    if not (isinstance(value, YamlScalar) and value.tag == BOOL):
        raise Refusal("{what} must be true or false")
    return value.text.lower() in _TRUE


def is_true(value: object) -> bool:
    return isinstance(value, YamlScalar) and value.tag == BOOL and value.text.lower() in _TRUE


def outcome(value: object) -> Outcome:
    given = text(value)
    try:
        return Outcome(given)
    except ValueError:
        raise Refusal("{what} is {value!r}; it must be auto, approval or deny") from None
