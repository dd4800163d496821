"""The values a policy file's fields hold, as pydantic types whose validators refuse with the file's
wording (see `yaml_source.Refusal`): names, durations, patterns, times, and what a match names."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final, TypeGuard

from annotated_types import MinLen
from pydantic import PlainValidator, ValidationInfo, WrapValidator
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from ..durations import format_duration, parse_duration
from ..ids import is_guid
from ..request import MAX_DURATION, Provider
from .rules import DAYS, role_is_valid
from .scopes import ANY, scope_pattern_segments
from .yaml_source import Refusal, YamlScalar, flag, text, whole_number

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
_PROVIDERS = tuple(p.value for p in Provider)
ABSENT: Final = object()


def name(value: object) -> str:
    """A rule or group name."""
    given = text(value)
    if not _NAME_RE.match(given):
        raise Refusal("{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    return given


def version(value: object) -> int:
    number = whole_number()(value)
    if number != 1:
        raise Refusal("version {number} is not supported; this jitgate reads version 1", number=number)
    return number


def is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip()) and bool(_NAME_RE.match(value))


def member(value: object) -> str:
    """A principal id (GUID), lower-cased."""
    guid = text(value).lower()
    if not is_guid(guid):
        raise Refusal("member {value!r} of group '{group}' is not a principal id (GUID)")
    return guid


def duration(value: object) -> timedelta:
    """A positive ISO 8601 duration up to the ceiling of any grant."""
    given = text(value)  # outside the try: a Refusal is a ValueError too
    try:
        length = parse_duration(given)
    except ValueError:
        raise Refusal("{what} {value!r} is not an ISO 8601 duration such as PT2H or PT30M") from None
    if length <= timedelta(0):
        raise Refusal("{what} must be positive")
    if length > MAX_DURATION:
        raise Refusal("{what} {value} exceeds the ceiling {ceiling}", ceiling=format_duration(MAX_DURATION))
    return length


def regex(value: object) -> re.Pattern[str]:
    given = text(value)
    try:
        return re.compile(given)
    except re.error as exc:
        raise Refusal("{what} {value!r} is not a valid regular expression: {problem}", problem=exc) from None


def time_of_day(latest: str) -> PlainValidator:
    """Minutes after midnight from HH:MM, up to `latest` (23:59, or 24:00 for an end)."""

    def validate(value: object) -> int:
        if isinstance(value, YamlScalar) and not value.is_null:
            value = value.text  # unquoted 18:00 is a YAML 1.1 base-60 integer: read it as written
        if not isinstance(value, str):
            raise Refusal("{what} must be a time of day HH:MM")
        if value == latest == "24:00":
            return 24 * 60
        found = _TIME_RE.match(value)
        if found is None:
            raise Refusal("{what} {text!r} is not a time of day HH:MM (00:00 to {latest})", text=value, latest=latest)
        return int(found.group(1)) * 60 + int(found.group(2))

    return PlainValidator(validate)


def day(value: object) -> int:
    """A day of the week (mon … sun, any case) as 0 … 6."""
    given = text(value).lower()
    if given not in DAYS:
        raise Refusal("window day {value!r} in {where} is not one of {days}", days=", ".join(DAYS))
    return DAYS.index(given)


def group_ref(value: object, info: ValidationInfo) -> str:
    """The name of a group the file defines (given in the validation context)."""
    group = text(value)
    groups = info.context["groups"] if info.context else {}
    if group not in groups:
        known = ", ".join(sorted(groups)) or "none defined"
        raise Refusal("unknown group '{value}' in {parent} (groups: {known})", known=known)
    return group


def _possible_providers(info: ValidationInfo) -> list[Provider]:
    """The providers the roles and scopes of the match being validated must suit (see MatchShape)."""
    return info.context["possible"] if info.context else []


def valid_providers(raw: object) -> list[Provider]:
    """The providers a match names as far as they are valid: any when "*" or absent."""
    if raw == ANY or raw is ABSENT:
        return list(Provider)
    if not isinstance(raw, list):
        return []
    return [Provider(p) for p in sorted({p for p in raw if isinstance(p, str) and p in _PROVIDERS})]


def provider(value: object) -> str:
    given = text(value)
    if given not in _PROVIDERS:
        raise Refusal("unknown provider {value!r} in {where}; known: {known}", known=", ".join(_PROVIDERS))
    return given


def role(value: object, info: ValidationInfo) -> str:
    """A role name or id that at least one of the match's providers could grant."""
    given = text(value)
    possible = _possible_providers(info)
    if possible and not any(role_is_valid(p, given) for p in possible):
        raise Refusal("role {value!r} in {where} is not a valid role for {possible}", possible=", ".join(possible))
    return given


def scope_pattern(value: object, info: ValidationInfo) -> str:
    """A scope pattern that means a path, of the kind (ARM or not) one of the match's providers uses."""
    pattern = text(value)
    try:
        scope_pattern_segments(pattern)
    except ValueError as exc:
        raise Refusal("scope pattern {value!r} in {where} {problem}", problem=exc) from None
    arm = pattern.startswith("/") or pattern.startswith("**")
    gcp = not pattern.startswith("/")
    possible = _possible_providers(info)
    if possible and not any((arm and p.has_arm_scopes) or (gcp and p.has_plain_scopes) for p in possible):
        kind = "an ARM path (starting with '/')" if arm and not gcp else "a path without a leading '/'"
        raise Refusal("scope pattern {value!r} in {where} is {kind}; it never matches {possible}", kind=kind,
                      possible=", ".join(possible))
    return pattern


def any_or_list(value: object, handler: ValidatorFunctionWrapHandler) -> Any:
    """`"*"` (any: None) or a non-empty list; YAML null is neither."""
    if value == ANY:
        return None
    if isinstance(value, YamlScalar) and value.is_null:
        raise Refusal("{what} must be a list")
    return handler(value)


Text = Annotated[str, PlainValidator(text)]
Name = Annotated[str, PlainValidator(name)]
Duration = Annotated[timedelta, PlainValidator(duration)]
Pattern = Annotated[re.Pattern[str], PlainValidator(regex)]
GroupRefs = Annotated[list[Annotated[str, PlainValidator(group_ref)]], MinLen(1)]
Flag = Annotated[bool, PlainValidator(flag)]
Days = Annotated[list[Annotated[int, PlainValidator(day)]], MinLen(1)]
Providers = Annotated[
    Annotated[list[Annotated[str, PlainValidator(provider)]], MinLen(1)] | None, WrapValidator(any_or_list)
]
Roles = Annotated[Annotated[list[Annotated[str, PlainValidator(role)]], MinLen(1)] | None, WrapValidator(any_or_list)]
ScopePatterns = Annotated[list[Annotated[str, PlainValidator(scope_pattern)]], MinLen(1)]
