"""RequestStore, LedgerStore and AuditStore on Azure Cosmos DB for NoSQL (`azure-cosmos`), one container each.

`requests`, partition key `/requestId`: one document per request, `id` = the request id. Writes are
conditional on the document's `_etag` (If-Match), so a writer that read an older version gets 412 →
ConcurrencyConflict. The record's own `version` is kept in the document too: the port speaks versions,
Cosmos speaks etags, and the adapter remembers which etag it read for which version.

`ledger`, partition key `/grantKey` = `GrantKey.assignment_name()` (a UUIDv5 of the key): every hold on
one grant key shares a partition, so `active_holds(key)` ("is any other hold active?", asked on every
revoke) is a single-partition query. `id` = the request id. `overdue_holds`, `all_active_holds` and
`holds_for_request` are cross-partition queries: reconcile asks them every few minutes over a few
hundred active holds, which is cheap, and they need no index beyond Cosmos's default one.

`audit`, partition key `/requestId`, `id` = `<requestId>:<seq 6 digits>` (the event's id): a concurrent
append of the same link is a 409 → AlreadyExists, never a fork. Auditor queries are parameterised; the
continuation token is the (at, id) position after the page's last event (the same token as the embedded
store's), resumed with a range filter on `atOrder`, a sort key "<at> <id>" kept in each document. Within
one call the SDK's own continuation pages the result. Why not hand out the SDK's continuation token: it is
bound to the query text and the partition layout, several KB for a cross-partition ORDER BY, and its pages
may come short or empty, while the port promises full pages and `None` exactly on the last one.

Single-property sort keys (`atOrder`, `updatedOrder`) instead of ORDER BY on two properties: a multi-
property ORDER BY needs a composite index in the container's indexing policy; one property needs none.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from ...domain.audit import AuditEvent, format_instant
from ...domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    JitgateError,
    NotFound,
    PermanentError,
    TransientError,
)
from ...domain.ledger import GrantKey, Hold, HoldStatus
from ...domain.lifecycle import RequestRecord, RequestState
from ...ports import AuditPage, AuditQuery
from ..sdk_errors import translated
from ..store_format import decode_continuation, encode_continuation
from ..store_format import instant as _instant
from ..store_format import parse_instant as _parse_instant

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.cosmos import ContainerProxy

log = logging.getLogger("jitgate.cosmos")

REQUESTS, LEDGER, AUDIT = "requests", "ledger", "audit"
MAX_PAGE = 1000
_SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")
_ETAGS_KEPT = 4096
# Statuses Cosmos answers when the same request may succeed later.
_TRANSIENT_STATUS = {408, 429, 449, 500, 502, 503, 504}

# The queries, parameterised; the fake container in tests/azure interprets exactly these.
REQUESTS_IN = "SELECT TOP @limit * FROM c WHERE ARRAY_CONTAINS(@states, c.state) ORDER BY c.updatedOrder"
REQUESTS_WITH_OUTBOX = (
    "SELECT TOP @limit * FROM c WHERE ARRAY_LENGTH(c.pendingEvents) > 0 ORDER BY c.updatedOrder"
)
HOLDS_ACTIVE = "SELECT * FROM c WHERE c.status = @active"
HOLDS_OVERDUE = "SELECT * FROM c WHERE c.status = @active AND c.expiresAt <= @now"
HOLDS_OF_REQUEST = "SELECT * FROM c WHERE c.requestId = @requestId"
CHAIN = "SELECT * FROM c ORDER BY c.seq"
REQUEST_IDS = "SELECT DISTINCT VALUE c.requestId FROM c"
# Auditor filter -> (its clause, its parameter); a query ANDs the clauses of the filters it has.
AUDIT_FILTERS = {
    "request_id": ("c.requestId = @requestId", "@requestId"),
    "principal_id": ("(c.requesterId = @principalId OR c.actor.principalId = @principalId)", "@principalId"),
    "type": ("c.type = @type", "@type"),
    "since": ("c.at >= @since", "@since"),
    "until": ("c.at < @until", "@until"),
    "after": ("c.atOrder > @after", "@after"),
}


class CosmosStore:
    """`RequestStore`, `LedgerStore` and `AuditStore` on three Cosmos containers. `container` maps a container
    name to its ContainerProxy; it is called once per container, on first use."""

    def __init__(self, container: Callable[[str], ContainerProxy]) -> None:
        self._container_factory = container
        self._containers: dict[str, ContainerProxy] = {}
        self._lock = threading.Lock()
        self._etags: OrderedDict[tuple[str, int], str] = OrderedDict()

    @classmethod
    def connect(cls, endpoint: str, database: str, credential: TokenCredential) -> CosmosStore:
        """The production wiring: one CosmosClient (made on first use) for the account at `endpoint`."""
        client: list[Any] = []
        lock = threading.Lock()

        def container(name: str) -> ContainerProxy:
            with lock:
                if not client:
                    from azure.cosmos import CosmosClient

                    client.append(CosmosClient(endpoint, credential=credential))
                proxy: ContainerProxy = client[0].get_database_client(database).get_container_client(name)
                return proxy

        return cls(container)

    def _container(self, name: str) -> ContainerProxy:
        with self._lock:
            proxy = self._containers.get(name)
        if proxy is None:
            proxy = self._container_factory(name)
            with self._lock:
                proxy = self._containers.setdefault(name, proxy)
        return proxy

    # ------------------------------------------------------------ requests

    def create_request(self, record: RequestRecord) -> RequestRecord:
        doc = _request_document(record, version=1)
        with _translated(f"create request {record.request_id}"):
            try:
                stored = self._container(REQUESTS).create_item(body=doc)
            except _errors().CosmosResourceExistsError:
                raise AlreadyExists(f"request {record.request_id} already exists") from None
        return self._record(stored)

    def get_request(self, request_id: str) -> RequestRecord | None:
        with _translated(f"read request {request_id}"):
            try:
                stored = self._container(REQUESTS).read_item(item=request_id, partition_key=request_id)
            except _errors().CosmosResourceNotFoundError as exc:
                _raise_if_container_missing(exc)
                return None
        return self._record(stored)

    def save_request(self, record: RequestRecord) -> RequestRecord:
        request_id = record.request_id
        etag = self._etag_of(request_id, record.version)
        doc = _request_document(record, version=record.version + 1)
        errors = _errors()
        with _translated(f"save request {request_id}"):
            try:
                stored = self._container(REQUESTS).replace_item(
                    item=request_id, body=doc, etag=etag, match_condition=_if_not_modified()
                )
            except errors.CosmosAccessConditionFailedError:
                raise ConcurrencyConflict(f"request {request_id} changed since version {record.version}") from None
            except errors.CosmosResourceNotFoundError:
                raise NotFound(f"request {request_id} does not exist") from None
        return self._record(stored)

    def requests_in(self, states: set[RequestState], limit: int = 1000) -> list[RequestRecord]:
        if not states or limit < 1:
            return []
        parameters = {"@limit": limit, "@states": sorted(state.value for state in states)}
        docs = self._query(REQUESTS, REQUESTS_IN, parameters, page_size=min(limit, MAX_PAGE))
        return [self._record(doc) for doc in islice(docs, limit)]

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        if limit < 1:
            return []
        docs = self._query(REQUESTS, REQUESTS_WITH_OUTBOX, {"@limit": limit}, page_size=min(limit, MAX_PAGE))
        return [self._record(doc) for doc in islice(docs, limit)]

    def _etag_of(self, request_id: str, version: int) -> str:
        """The etag of `version` of the record, as read or written by this store, else read now."""
        with self._lock:
            etag = self._etags.get((request_id, version))
        if etag is not None:
            return etag
        current = self.get_request(request_id)
        if current is None:
            raise NotFound(f"request {request_id} does not exist")
        if current.version != version:
            raise ConcurrencyConflict(f"request {request_id} is at version {current.version}, not {version}")
        with self._lock:
            etag = self._etags.get((request_id, version))
        if etag is None:  # evicted in between by a flood of other reads; the write still checks it
            raise ConcurrencyConflict(f"request {request_id}: lost track of version {version}; read it again")
        return etag

    def _record(self, doc: dict[str, Any]) -> RequestRecord:
        # NB. From JSON text, as the embedded store does: AccessRequest is strict, and strict python-mode
        # validation refuses the plain strings that stand for its enums in a stored document.
        record = RequestRecord.model_validate_json(json.dumps(_without(doc, "id", "updatedOrder")))
        with self._lock:
            self._etags[(record.request_id, record.version)] = str(doc["_etag"])
            self._etags.move_to_end((record.request_id, record.version))
            while len(self._etags) > _ETAGS_KEPT:
                self._etags.popitem(last=False)
        return record

    # ------------------------------------------------------------ ledger

    def put_hold(self, hold: Hold) -> None:
        doc = {
            "id": hold.request_id,
            "grantKey": hold.key.assignment_name(),
            "provider": hold.provider,
            "principalId": hold.principal_id,
            "roleDefinitionId": hold.role_definition_id,
            "scope": hold.scope,
            "requestId": hold.request_id,
            "grantedAt": _instant(hold.granted_at),
            "expiresAt": _instant(hold.expires_at),
            "preexisting": hold.preexisting,
            "status": hold.status.value,
            "releasedAt": None if hold.released_at is None else _instant(hold.released_at),
            "principalType": hold.principal_type,
        }
        with _translated(f"write the hold of {hold.request_id}"):
            self._container(LEDGER).upsert_item(body=doc)

    def get_hold(self, key: GrantKey, request_id: str) -> Hold | None:
        with _translated(f"read the hold of {request_id}"):
            try:
                doc = self._container(LEDGER).read_item(item=request_id, partition_key=key.assignment_name())
            except _errors().CosmosResourceNotFoundError as exc:
                _raise_if_container_missing(exc)
                return None
        return _hold(doc)

    def active_holds(self, key: GrantKey) -> list[Hold]:
        docs = self._query(LEDGER, HOLDS_ACTIVE, {"@active": HoldStatus.ACTIVE.value}, key.assignment_name())
        return _ordered(hold for hold in map(_hold, docs) if hold.key == key)

    def holds_for_request(self, request_id: str) -> list[Hold]:
        return _ordered(map(_hold, self._query(LEDGER, HOLDS_OF_REQUEST, {"@requestId": request_id})))

    def overdue_holds(self, now: datetime) -> list[Hold]:
        parameters = {"@active": HoldStatus.ACTIVE.value, "@now": _instant(now)}
        return _ordered(map(_hold, self._query(LEDGER, HOLDS_OVERDUE, parameters)))

    def all_active_holds(self) -> list[Hold]:
        return _ordered(map(_hold, self._query(LEDGER, HOLDS_ACTIVE, {"@active": HoldStatus.ACTIVE.value})))

    # ------------------------------------------------------------ audit

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        doc = event.document()
        doc["requesterId"] = principal_id
        doc["atOrder"] = f"{doc['at']} {event.id}"
        with _translated(f"append audit event {event.id}"):
            try:
                self._container(AUDIT).create_item(body=doc)
            except _errors().CosmosResourceExistsError:
                raise AlreadyExists(f"audit event {event.id} already exists") from None

    def chain(self, request_id: str) -> list[AuditEvent]:
        return [_event(doc) for doc in self._query(AUDIT, CHAIN, {}, partition_key=request_id)]

    def query(self, query: AuditQuery) -> AuditPage:
        limit = min(max(query.limit, 1), MAX_PAGE)
        values: dict[str, Any] = {
            "request_id": query.request_id,
            "principal_id": query.principal_id,
            "type": None if query.type is None else str(query.type),
            "since": None if query.since is None else _instant(query.since),
            "until": None if query.until is None else _instant(query.until),
            "after": None if query.continuation is None else " ".join(decode_continuation(query.continuation)),
        }
        chosen = {name: value for name, value in values.items() if value is not None}
        where = " AND ".join(AUDIT_FILTERS[name][0] for name in chosen)
        text = "SELECT TOP @top * FROM c" + (f" WHERE {where}" if where else "") + " ORDER BY c.atOrder"
        parameters = {"@top": limit + 1} | {AUDIT_FILTERS[name][1]: value for name, value in chosen.items()}
        docs = list(islice(self._query(AUDIT, text, parameters, query.request_id, page_size=limit + 1), limit + 1))
        events = [_event(doc) for doc in docs[:limit]]
        more = len(docs) > limit
        continuation = encode_continuation(format_instant(events[-1].at), events[-1].id) if more else None
        return AuditPage(events=events, continuation=continuation)

    def request_ids(self) -> Iterator[str]:
        for value in self._query(AUDIT, REQUEST_IDS, {}):
            yield str(value)

    # ------------------------------------------------------------ queries

    def _query(
        self,
        container: str,
        text: str,
        parameters: dict[str, Any],
        partition_key: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Any]:
        """Stream the results, page by page (the SDK follows its own continuation); errors translated."""
        with _translated(f"query {container}"):
            results = self._container(container).query_items(
                query=text,
                parameters=[{"name": name, "value": value} for name, value in parameters.items()],
                partition_key=partition_key,
                enable_cross_partition_query=True if partition_key is None else None,
                max_item_count=page_size,
            )
            yield from results


# ---------------------------------------------------------------- documents


def _request_document(record: RequestRecord, version: int) -> dict[str, Any]:
    doc = record.document()
    doc["version"] = version
    doc["id"] = record.request_id
    doc["updatedOrder"] = f"{_instant(record.updated_at)} {record.request_id}"
    return doc


def _hold(doc: dict[str, Any]) -> Hold:
    return Hold(
        provider=doc["provider"],
        principal_id=doc["principalId"],
        role_definition_id=doc["roleDefinitionId"],
        scope=doc["scope"],
        request_id=doc["requestId"],
        granted_at=_parse_instant(doc["grantedAt"]),
        expires_at=_parse_instant(doc["expiresAt"]),
        preexisting=bool(doc["preexisting"]),
        status=HoldStatus(doc["status"]),
        released_at=None if doc.get("releasedAt") is None else _parse_instant(doc["releasedAt"]),
        principal_type=doc.get("principalType"),  # absent from holds written before holds kept it
    )


def _event(doc: dict[str, Any]) -> AuditEvent:
    return AuditEvent.model_validate_json(json.dumps(_without(doc, "requesterId", "atOrder")))


def _without(doc: dict[str, Any], *ours: str) -> dict[str, Any]:
    """The document as jitgate wrote it: without Cosmos's system properties and the adapter's own fields."""
    dropped = set(_SYSTEM_PROPERTIES) | set(ours)
    return {key: value for key, value in doc.items() if key not in dropped}


def _ordered(holds: Iterator[Hold] | Any) -> list[Hold]:
    return sorted(holds, key=lambda h: (h.expires_at, h.request_id, h.provider, h.principal_id,
                                        h.role_definition_id, h.scope))




# ---------------------------------------------------------------- errors


def _errors() -> Any:
    from azure.cosmos import exceptions

    return exceptions


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def _raise_if_container_missing(exc: Exception) -> None:
    # NB. 404 with sub-status 1003: the database or container itself does not exist (a deployment fault).
    if getattr(exc, "sub_status", None) == 1003:
        raise PermanentError(f"Cosmos container or database missing: {exc}") from exc


def _translated(what: str) -> AbstractContextManager[None]:
    return translated(what, _translate)


def _translate(exc: Exception, what: str) -> JitgateError | None:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    from azure.cosmos import exceptions as cosmos

    text = f"{what}: {exc}"
    if isinstance(exc, cosmos.CosmosHttpResponseError):
        status = exc.status_code or 0
        if status in _TRANSIENT_STATUS:
            return TransientError(text, retry_after=_retry_after(exc))
        return PermanentError(text)
    if isinstance(exc, cosmos.CosmosClientTimeoutError | ServiceRequestError | ServiceResponseError):
        return TransientError(text)
    return None


def _retry_after(exc: Any) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    millis = headers.get("x-ms-retry-after-ms")
    try:
        return None if millis is None else float(millis) / 1000.0
    except ValueError:
        return None
