"""The access request message, schema version 1 (ARCHITECTURE §2). The JSON Schema is generated from here."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

from .durations import format_duration, parse_duration
from .errors import FieldError, InvalidRequest
from .ids import GUID_RE, NIL_GUID, RequestId, is_guid, principal_id_problem, synthetic_request_id
from .json_body import BodyTooLarge, MalformedBody, parse_json

MAX_BODY_BYTES = 64 * 1024
MAX_DURATION = timedelta(days=31)  # a hard ceiling; each policy rule sets the real maximum
SCHEMA_VERSION = 1


class Provider(StrEnum):
    AZURE_RBAC = "azure-rbac"
    AZURE_PIM = "azure-pim"
    GCP_IAM = "gcp-iam"
    LOCAL = "local"
    POSTGRES = "postgres"
    AZURE_SQL = "azure-sql"
    COSMOS_DATA = "cosmos-data"

    @property
    def has_arm_scopes(self) -> bool:
        """Whether some scope of this provider is an ARM path (starting with '/')."""
        return self is not Provider.GCP_IAM

    @property
    def has_plain_scopes(self) -> bool:
        """Whether some scope of this provider is a path without a leading '/' (a GCP resource, a server)."""
        return self in (Provider.GCP_IAM, Provider.POSTGRES)


class PrincipalType(StrEnum):
    USER = "User"
    GROUP = "Group"


def _to_duration(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise ValueError("duration must be an ISO 8601 string such as PT2H")
    return parse_duration(value)


IsoDuration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "duration",
            "pattern": r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$",
            "description": "ISO 8601 duration, positive, at most P31D and within the matched rule's maximum",
            "examples": ["PT2H", "PT30M"],
        }
    ),
]

Guid = Annotated[
    str,
    Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
    BeforeValidator(lambda v: v.lower() if isinstance(v, str) and GUID_RE.fullmatch(v.lower()) else v),
]

_ARM_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$")
_ARM_ROLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._()-]*( [A-Za-z0-9._()-]+)*$")
_GCP_SCOPE = re.compile(
    r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]|folders/[0-9]{1,20}|organizations/[0-9]{1,20})$"
)
_GCP_ROLE = re.compile(
    r"^(roles/[A-Za-z][A-Za-z0-9_.]{2,99}"
    r"|(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]|organizations/[0-9]{1,20})/roles/[A-Za-z0-9_.]{3,64})$"
)


# NB. A database's name in a scope: what PostgreSQL allows unquoted plus '-' and '.', ASCII, up to 63 bytes.
_DATABASE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}"
_AZURE_POSTGRES = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.DBforPostgreSQL"
    rf"/flexibleServers/[a-z0-9][a-z0-9-]{{1,61}}[a-z0-9]/databases/{_DATABASE}$",
    re.IGNORECASE,
)
_CLOUD_SQL_DATABASE = re.compile(
    rf"^projects/[a-z][a-z0-9-]{{4,28}}[a-z0-9]/instances/[a-z][a-z0-9-]{{0,97}}/databases/{_DATABASE}$"
)
_SERVER_DATABASE = re.compile(rf"^[a-z0-9][a-z0-9-]{{0,62}}/{_DATABASE}$")
PG_NAME_BYTES = 63
# NB. An Azure SQL Database is an ARM resource: the logical server's name as ARM allows it, any database name
# `_arm_scope` lets through. A Cosmos DB data-plane scope is the account's ARM id, optionally /dbs/<database>
# and /colls/<container>, as the data-plane role assignment's `scope` names it.
_AZURE_SQL_DATABASE = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.Sql"
    r"/servers/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?/databases/[^/]+$",
    re.IGNORECASE,
)
_COSMOS_SCOPE = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.DocumentDB"
    r"/databaseAccounts/[a-z0-9](?:[a-z0-9-]{1,48}[a-z0-9])(?:/dbs/[^/]+(?:/colls/[^/]+)?)?$",
    re.IGNORECASE,
)
SQL_NAME_CHARS = 128  # sysname


def _database_role(role: str, kind: str = "a PostgreSQL role name", limit: int = PG_NAME_BYTES,
                   unit: str = "bytes") -> str:
    """A database role's name: printable ASCII (quotes, ']', ';' and '--' are legal in a quoted identifier and
    never reach SQL text: identifiers are composed by one quoting function), at most `limit` bytes (one per
    character here), no leading or trailing space."""
    if len(role.encode()) > limit:
        raise ValueError(f"{kind} is at most {limit} {unit}")
    if any(not " " <= char <= "~" for char in role):
        raise ValueError(f"{kind} must be printable ASCII (no control characters)")
    if role != role.strip():
        raise ValueError(f"{kind} must not start or end with a space")
    return role


def _model_config() -> ConfigDict:
    return ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        str_strip_whitespace=False,
    )


# NB. By Unicode category rather than a list: control (Cc), format (Cf: bidi overrides, zero-width
# joiners, BOM, soft hyphen), line/paragraph separators (Zl, Zp) and unassigned/private code points can
# forge lines or hide text in Teams cards, logs and terminals.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def _check_text(value: str, allow_newlines: bool) -> str:
    allowed = "\n\t" if allow_newlines else ""
    for char in value:
        if char not in allowed and unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"must not contain control or bidirectional formatting characters (U+{ord(char):04X})")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _single_line(value: str) -> str:
    return _check_text(value, allow_newlines=False)


def _multi_line(value: str) -> str:
    return _check_text(value, allow_newlines=True)


class Requester(BaseModel):
    """Who asks: an Entra principal, with the Backstage identity it came from."""

    model_config = _model_config()

    principal_id: Annotated[Guid, Field(json_schema_extra={"not": {"const": NIL_GUID}})]
    principal_type: PrincipalType = PrincipalType.USER
    display_name: Annotated[str, Field(min_length=1, max_length=256)]
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    backstage_ref: (
        Annotated[str, Field(max_length=256, pattern=r"^[a-z][a-z0-9-]*:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")]
        | None
    ) = None

    _clean_name = field_validator("display_name")(_single_line)

    @field_validator("principal_id")
    @classmethod
    def _names_someone(cls, value: str) -> str:
        problem = principal_id_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def validate_scope(provider: Provider, scope: str) -> str:
    """Refuse anything that is not one literal resource path of the provider's kind: no wildcards, `..`,
    empty or trailing segments."""
    if len(scope) > 512:
        raise ValueError("scope is longer than 512 characters")
    if not scope.isascii():
        raise ValueError("scope must be ASCII")
    if provider is Provider.POSTGRES:
        return _database_scope(scope)
    if provider is Provider.AZURE_SQL:
        _arm_scope(scope)
        if not _AZURE_SQL_DATABASE.fullmatch(scope):
            raise ValueError("an Azure SQL scope must be /subscriptions/<guid>/resourceGroups/<name>/providers"
                             "/Microsoft.Sql/servers/<server>/databases/<database>")
        return scope
    if provider is Provider.COSMOS_DATA:
        _arm_scope(scope)
        if not _COSMOS_SCOPE.fullmatch(scope):
            raise ValueError("a Cosmos DB scope must be /subscriptions/<guid>/resourceGroups/<name>/providers"
                             "/Microsoft.DocumentDB/databaseAccounts/<account>[/dbs/<database>[/colls/<container>]]")
        return scope
    if provider is Provider.GCP_IAM:
        if not _GCP_SCOPE.fullmatch(scope):
            raise ValueError("scope must be projects/<id>, folders/<number> or organizations/<number>")
        return scope
    return _arm_scope(scope)


def _database_scope(scope: str) -> str:
    """A database the way its platform names it: an Azure flexible server's ARM id + /databases/<db>, a Cloud
    SQL instance's projects/<p>/instances/<i>/databases/<db>, or <server>/<db> for a self-managed server
    (the name its entry has in the servers file)."""
    if scope.startswith("/"):
        _arm_scope(scope)
        if not _AZURE_POSTGRES.fullmatch(scope):
            raise ValueError(
                "a PostgreSQL scope starting with '/' must be /subscriptions/<guid>/resourceGroups/<name>"
                "/providers/Microsoft.DBforPostgreSQL/flexibleServers/<server>/databases/<database>"
            )
        return scope
    if scope.startswith("projects/"):
        if not _CLOUD_SQL_DATABASE.fullmatch(scope):
            raise ValueError("a Cloud SQL scope must be projects/<project>/instances/<instance>/databases/<database>")
        return scope
    if not _SERVER_DATABASE.fullmatch(scope):
        raise ValueError(
            "a PostgreSQL scope must be <server>/<database> (as named in the servers file), an Azure flexible "
            "server's ARM id + /databases/<database>, or projects/<p>/instances/<i>/databases/<database>"
        )
    return scope


def _arm_scope(scope: str) -> str:
    if not scope.startswith("/") or scope.endswith("/"):
        raise ValueError("scope must start with '/' and must not end with '/'")
    segments = scope[1:].split("/")
    for segment in segments:
        if segment in ("", ".", "..") or not _ARM_SEGMENT.fullmatch(segment):
            raise ValueError(f"scope segment {segment!r} is not allowed")
    if segments[0].lower() == "subscriptions":
        if len(segments) < 2 or not is_guid(segments[1].lower()):
            raise ValueError(
                "scope must be /subscriptions/<subscription guid>[/resourceGroups/<name>[/providers/...]]"
            )
        if len(segments) > 2 and (segments[2].lower() != "resourcegroups" or len(segments) < 4):
            raise ValueError("below a subscription the scope must be /resourceGroups/<name>")
        if len(segments) > 4 and (
            segments[4].lower() != "providers" or len(segments) < 8 or len(segments) % 2
        ):
            raise ValueError("a resource scope must be /providers/<namespace>/<type>/<name>")
    elif [s.lower() for s in segments[:3]] == ["providers", "microsoft.management", "managementgroups"]:
        if len(segments) != 4:
            raise ValueError(
                "a management group scope is /providers/Microsoft.Management/managementGroups/<name>"
            )
    else:
        raise ValueError("scope must be a subscription, resource group, resource or management group path")
    return scope


def validate_role(provider: Provider, role: str) -> str:
    """A role name from the provider's catalog or a role definition id; ASCII only (no look-alikes)."""
    if not role.isascii():
        raise ValueError("role must be ASCII (look-alike characters are refused)")
    if provider is Provider.POSTGRES:
        return _database_role(role)
    if provider is Provider.AZURE_SQL:
        return _database_role(role, "an Azure SQL role name", SQL_NAME_CHARS, "characters")
    if provider is not Provider.GCP_IAM:
        if is_guid(role.lower()) or (len(role) <= 128 and _ARM_ROLE_NAME.fullmatch(role)):
            return role
        raise ValueError("role must be a role name such as 'Contributor' or a role definition GUID")
    if _GCP_ROLE.fullmatch(role):
        return role
    raise ValueError("role must be roles/<name> or a custom role path")


class Target(BaseModel):
    """What is asked for: a role at a scope of one provider."""

    model_config = _model_config()

    provider: Provider
    scope: Annotated[str, Field(min_length=1, max_length=512)]
    role: Annotated[str, Field(min_length=1, max_length=256)]

    @field_validator("scope")
    @classmethod
    def _check_scope(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        return validate_scope(provider, value) if provider else value

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        return validate_role(provider, value) if provider else value


class RequestContext(BaseModel):
    """Where the request came from in Backstage."""

    model_config = _model_config()

    entity_ref: (
        Annotated[str, Field(max_length=256, pattern=r"^[a-z][a-z0-9-]*:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")]
        | None
    ) = None
    task_id: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] | None = None


class AccessRequest(BaseModel):
    """An engineer's request for a time-boxed role (schema version 1)."""

    model_config = _model_config() | ConfigDict(
        title="AccessRequestV1",
        json_schema_extra={"$id": "https://jitgate.io/schemas/access-request.v1.schema.json"},
    )

    schema_version: Literal[1]
    request_id: Guid
    requester: Requester
    target: Target
    duration: IsoDuration
    justification: Annotated[str, Field(min_length=1, max_length=1000)]
    ticket: (
        Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./#-]*$")] | None
    ) = None
    context: RequestContext | None = None

    _clean_justification = field_validator("justification")(_multi_line)

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("duration must be positive")
        if value > MAX_DURATION:
            raise ValueError(f"duration must be at most {format_duration(MAX_DURATION)}")
        return value

    @field_validator("schema_version", mode="before")
    @classmethod
    def _exactly_one(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("Input should be 1 (the number, not a boolean)")
        return value

    @property
    def id(self) -> RequestId:
        return RequestId(self.request_id)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def fingerprint(self) -> str:
        """Same request ⇔ same fingerprint: the idempotency check for a reused requestId."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def field_errors(exc: ValidationError) -> list[FieldError]:
    """A model's validation errors as FieldErrors, in words (no `Value error, ` prefix, no input echoed)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(loc, msg))
    return out


def parse_access_request(raw: bytes | str) -> AccessRequest:
    """Bytes from the bus or HTTP → a valid request, or InvalidRequest with every reason."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        doc = parse_json(data, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise InvalidRequest([FieldError("body", str(exc))], synthetic_request_id(data[:MAX_BODY_BYTES])) from None
    except MalformedBody as exc:
        raise InvalidRequest([FieldError("body", f"not valid JSON: {exc}")], synthetic_request_id(data)) from None
    try:
        return AccessRequest.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidRequest(field_errors(exc), _request_id_of(doc, data)) from None


def _request_id_of(doc: Any, raw: bytes) -> RequestId:
    if isinstance(doc, dict):
        candidate = doc.get("requestId")
        if isinstance(candidate, str) and is_guid(candidate.lower()):
            return RequestId(candidate.lower())
    return synthetic_request_id(raw)


def request_json_schema() -> dict[str, Any]:
    """The committed schemas/access-request.v1.schema.json is exactly this."""
    schema = AccessRequest.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
