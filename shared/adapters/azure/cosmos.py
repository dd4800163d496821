"""RequestStore, LedgerStore and AuditStore on Azure Cosmos DB for NoSQL (`azure-cosmos`).

`audit`, partition key `/requestId`: a request's audit chain and its record live in one partition, so a state
change and the events it emitted are one transactional batch (ARCHITECTURE §6): replace the record under
If-Match on the `_etag` it was read with, and create each event; all of it or none. Events: `id` =
`<requestId>:<seq 6 digits>`, `docType` "event" (events written before records moved here have no
`docType`), so a concurrent append of the same link is a 409, never a fork. The record: `id` = "request"
(never an event id), `docType` "request". Every query for events says so (`EVENTS`). A batch holds at most
100 operations and 2 MB; a write that would not fit keeps its events in the record's outbox instead, for
the lifecycle to append after (it never happens with the events one transition emits).

`requests`, partition key `/requestId`: where records were kept before. Read, never written: a record found
only there moves to `audit` with its next write (the batch creates it there), and its old document is then
deleted. Queries over records ask both containers; a missing `requests` container holds nothing.

`ledger`, partition key `/grantKey` = `GrantKey.assignment_name()` (a UUIDv5 of the key): one document per
grant key, `id` = the grant key too, holding its holds, the deletion intent and `version`; every write is
conditional on its `_etag` (If-Match), a first write is a create (409 when another writer was first).
Denormalised for reconcile's cross-partition queries: `requestIds` (every hold's request), `activeHolds`
(how many) and `nextExpiry` (the earliest active expiry, null without one). Hold documents of the earlier
layout (`id` = request id, one per hold, in the key's partition) are read as the key's document at version
0; its first write creates the grant document and deletes them in the same batch.

The etags: the ports speak versions, Cosmos speaks etags, and the adapter remembers which etag it read for
which version of which document.

Auditor queries are parameterised; the continuation token is the (at, id) position after the page's last
event (the same token as the embedded store's), resumed with a range filter on `atOrder`, a sort key
"<at> <id>" kept in each event. Within one call the SDK's own continuation pages the result. Why not hand out
the SDK's continuation token: it is bound to the query text and the partition layout, several KB for a
cross-partition ORDER BY, and its pages may come short or empty, while the port promises full pages and
`None` exactly on the last one.

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
from ...domain.ledger import Deletion, Grant, GrantKey, Hold, HoldStatus
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
RECORD_ID = "request"  # the id of a request's record in its partition of `audit`
RECORD, EVENT, GRANT = "request", "event", "grant"  # docType
MAX_PAGE = 1000
BATCH_OPERATIONS = 100  # Cosmos's limits on one transactional batch: 100 operations,
BATCH_BYTES = 1_900_000  # and 2 MB, of which some is the request's own framing
_SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn")
_ETAGS_KEPT = 4096
# Statuses Cosmos answers when the same request may succeed later.
_TRANSIENT_STATUS = {408, 429, 449, 500, 502, 503, 504}

# The queries, parameterised; the fake container in tests/azure interprets exactly these.
EVENTS = "(NOT IS_DEFINED(c.docType) OR c.docType = @event)"
REQUESTS_IN = (
    "SELECT TOP @limit * FROM c WHERE c.docType = @record AND ARRAY_CONTAINS(@states, c.state) ORDER BY c.updatedOrder"
)
REQUESTS_WITH_OUTBOX = (
    "SELECT TOP @limit * FROM c WHERE c.docType = @record AND ARRAY_LENGTH(c.pendingEvents) > 0"
    " ORDER BY c.updatedOrder"
)
LEGACY_REQUESTS_IN = "SELECT TOP @limit * FROM c WHERE ARRAY_CONTAINS(@states, c.state) ORDER BY c.updatedOrder"
LEGACY_REQUESTS_WITH_OUTBOX = (
    "SELECT TOP @limit * FROM c WHERE ARRAY_LENGTH(c.pendingEvents) > 0 ORDER BY c.updatedOrder"
)
GRANTS_ACTIVE = "SELECT * FROM c WHERE c.activeHolds > 0"
GRANTS_OVERDUE = "SELECT * FROM c WHERE c.nextExpiry <= @now"
GRANTS_OF_REQUEST = "SELECT * FROM c WHERE ARRAY_CONTAINS(c.requestIds, @requestId)"
# Hold documents of the earlier layout; a grant document has no top-level `status` nor `requestId`.
LEGACY_HOLDS_ACTIVE = "SELECT * FROM c WHERE c.status = @active"
LEGACY_HOLDS_OVERDUE = "SELECT * FROM c WHERE c.status = @active AND c.expiresAt <= @now"
LEGACY_HOLDS_OF_REQUEST = "SELECT * FROM c WHERE c.requestId = @requestId"
PARTITION = "SELECT * FROM c"
CHAIN = f"SELECT * FROM c WHERE {EVENTS} ORDER BY c.seq"
REQUEST_IDS = f"SELECT DISTINCT VALUE c.requestId FROM c WHERE {EVENTS}"
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
    """`RequestStore`, `LedgerStore` and `AuditStore` on the `audit` and `ledger` containers (and records of the
    earlier layout in `requests`). `container` maps a container name to its ContainerProxy; it is called once
    per container, on first use."""

    def __init__(self, container: Callable[[str], ContainerProxy]) -> None:
        self._container_factory = container
        self._containers: dict[str, ContainerProxy] = {}
        self._lock = threading.Lock()
        self._etags: OrderedDict[tuple[str, str, int], str] = OrderedDict()  # (container, id, version) -> etag

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
        request_id = record.request_id
        if self._read(REQUESTS, request_id, request_id, legacy=True) is not None:
            raise AlreadyExists(f"request {request_id} already exists")
        return self._commit(record, version=1, first=("create", (_request_document(record, 1),)))

    def get_request(self, request_id: str) -> RequestRecord | None:
        doc = self._read(AUDIT, RECORD_ID, request_id)
        if doc is not None:
            return self._record(doc, AUDIT)
        legacy = self._read(REQUESTS, request_id, request_id, legacy=True)
        return None if legacy is None else self._record(legacy, REQUESTS)

    def save_request(self, record: RequestRecord) -> RequestRecord:
        request_id = record.request_id
        where, etag = self._record_etag(request_id, record.version)
        doc = _request_document(record, record.version + 1)
        first: tuple[Any, ...] = (
            ("replace", (RECORD_ID, doc), {"if_match_etag": etag}) if where == AUDIT else ("create", (doc,))
        )
        saved = self._commit(record, record.version + 1, first)
        if where == REQUESTS:  # moved: the old document goes (a leftover is never read before the new one)
            self._delete_quietly(REQUESTS, request_id, request_id, etag)
        return saved

    def requests_in(self, states: set[RequestState], limit: int = 1000) -> list[RequestRecord]:
        if not states or limit < 1:
            return []
        parameters = {"@limit": limit, "@states": sorted(state.value for state in states)}
        return self._records(REQUESTS_IN, LEGACY_REQUESTS_IN, parameters, limit)

    def requests_with_outbox(self, limit: int = 1000) -> list[RequestRecord]:
        if limit < 1:
            return []
        return self._records(REQUESTS_WITH_OUTBOX, LEGACY_REQUESTS_WITH_OUTBOX, {"@limit": limit}, limit)

    def _commit(self, record: RequestRecord, version: int, first: tuple[Any, ...]) -> RequestRecord:
        """Write the record (`first`, a batch operation) and create its pending events, in one batch; a write
        too large for one batch is made alone, its events kept in the record's outbox."""
        request_id = record.request_id
        principal = record.request.requester.principal_id if record.request is not None else None
        events = [_event_document(event, principal) for event in record.pending_events]
        operations = [first, *(("create", (event,)) for event in events)]
        size = sum(len(json.dumps(operation[1][-1])) for operation in operations)
        if len(operations) > BATCH_OPERATIONS or size > BATCH_BYTES:
            log.warning("request %s: %d events do not fit one batch; kept in its outbox", request_id, len(events))
            return self._write_alone(record, version, first)
        with _translated(f"write request {request_id}"):
            try:
                results = self._container(AUDIT).execute_item_batch(
                    batch_operations=operations, partition_key=request_id
                )
            except _errors().CosmosBatchOperationError as exc:
                raise _batch_refused(exc, request_id, version, events) from None
        result = results[0]
        stored = result.get("resourceBody") or {**first[1][-1], "_etag": result["eTag"]}
        return self._record(stored, AUDIT)

    def _write_alone(self, record: RequestRecord, version: int, first: tuple[Any, ...]) -> RequestRecord:
        doc = {**first[1][-1], "pendingEvents": [e.document() for e in record.pending_events]}
        errors = _errors()
        with _translated(f"write request {record.request_id}"):
            try:
                if first[0] == "create":
                    stored = self._container(AUDIT).create_item(body=doc)
                else:
                    stored = self._container(AUDIT).replace_item(
                        item=RECORD_ID, body=doc, etag=first[2]["if_match_etag"], match_condition=_if_not_modified()
                    )
            except errors.CosmosResourceExistsError:
                raise (AlreadyExists if version == 1 else ConcurrencyConflict)(
                    f"request {record.request_id} was written meanwhile"
                ) from None
            except errors.CosmosAccessConditionFailedError:
                raise ConcurrencyConflict(f"request {record.request_id} changed since version {version - 1}") from None
            except errors.CosmosResourceNotFoundError:
                raise NotFound(f"request {record.request_id} does not exist") from None
        return self._record(stored, AUDIT)

    def _records(self, text: str, legacy_text: str, parameters: dict[str, Any], limit: int) -> list[RequestRecord]:
        """A query over records, in `audit` and in `requests` (records of the earlier layout not moved yet)."""
        page = min(limit, MAX_PAGE)
        found = {doc["requestId"]: (doc, AUDIT) for doc in islice(
            self._query(AUDIT, text, parameters | {"@record": RECORD}, page_size=page), limit)}
        for doc in islice(self._query(REQUESTS, legacy_text, parameters, page_size=page, legacy=True), limit):
            request_id = doc["requestId"]
            if request_id not in found and self._read(AUDIT, RECORD_ID, request_id) is None:
                found[request_id] = (doc, REQUESTS)
        ordered = sorted(found.values(), key=lambda pair: str(pair[0]["updatedOrder"]))[:limit]
        return [self._record(doc, where) for doc, where in ordered]

    def _record_etag(self, request_id: str, version: int) -> tuple[str, str]:
        """Where `version` of the record is and its etag, as read or written by this store, else read now."""
        for where in (AUDIT, REQUESTS):
            etag = self._etag(where, request_id, version)
            if etag is not None:
                return where, etag
        current = self.get_request(request_id)
        if current is None:
            raise NotFound(f"request {request_id} does not exist")
        if current.version != version:
            raise ConcurrencyConflict(f"request {request_id} is at version {current.version}, not {version}")
        for where in (AUDIT, REQUESTS):
            etag = self._etag(where, request_id, version)
            if etag is not None:
                return where, etag
        # Evicted in between by a flood of other reads; the write would still check it.
        raise ConcurrencyConflict(f"request {request_id}: lost track of version {version}; read it again")

    def _record(self, doc: dict[str, Any], where: str) -> RequestRecord:
        # NB. From JSON text, as the embedded store does: AccessRequest is strict, and strict python-mode
        # validation refuses the plain strings that stand for its enums in a stored document.
        record = RequestRecord.model_validate_json(json.dumps(_without(doc, "id", "updatedOrder", "docType")))
        self._remember(where, record.request_id, record.version, str(doc["_etag"]))
        return record

    # ------------------------------------------------------------ ledger

    def get_grant(self, key: GrantKey) -> Grant | None:
        name = key.assignment_name()
        doc = self._read(LEDGER, name, name)
        if doc is not None:
            self._remember(LEDGER, name, int(doc["version"]), str(doc["_etag"]))
            return _grant(doc)
        holds = [_legacy_hold(d) for d in self._query(LEDGER, PARTITION, {}, partition_key=name)]
        holds = [h for h in holds if h.key == key]
        if not holds:
            return None
        grant = Grant.new(key)
        for hold in holds:
            grant = grant.with_hold(hold)
        latest = max(holds, key=lambda h: h.granted_at)
        return grant.model_copy(update={"principal_type": latest.principal_type})

    def put_grant(self, grant: Grant) -> Grant:
        name = grant.key.assignment_name()
        doc = _grant_document(grant, grant.version + 1)
        errors = _errors()
        with _translated(f"write grant {name}"):
            try:
                if grant.version == 0:
                    stored = self._create_grant(name, doc)
                else:
                    stored = self._container(LEDGER).replace_item(
                        item=name, body=doc, etag=self._grant_etag(grant), match_condition=_if_not_modified()
                    )
            except (errors.CosmosAccessConditionFailedError, errors.CosmosResourceExistsError,
                    errors.CosmosResourceNotFoundError):
                raise ConcurrencyConflict(f"grant {name} changed since version {grant.version}") from None
        self._remember(LEDGER, name, grant.version + 1, str(stored["_etag"]))
        return grant.model_copy(update={"version": grant.version + 1})

    def _create_grant(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The key's first document, in one batch with the deletion of its hold documents of the earlier layout
        (active ones first; any beyond the batch's limit are released history, deleted after)."""
        legacy = [d for d in self._query(LEDGER, PARTITION, {}, partition_key=name) if d.get("docType") != GRANT]
        if not legacy:
            created: dict[str, Any] = self._container(LEDGER).create_item(body=doc)
            return created
        legacy.sort(key=lambda d: d.get("status") != HoldStatus.ACTIVE.value)
        deletes = [("delete", (d["id"],), {"if_match_etag": d["_etag"]}) for d in legacy]
        try:
            results = self._container(LEDGER).execute_item_batch(
                batch_operations=[("create", (doc,)), *deletes[: BATCH_OPERATIONS - 1]], partition_key=name
            )
        except _errors().CosmosBatchOperationError as exc:
            if exc.status_code in (409, 412, 404):
                raise ConcurrencyConflict(f"grant {name} was written meanwhile") from None
            raise _batch_error(exc, f"write grant {name}") from None
        for later in legacy[BATCH_OPERATIONS - 1 :]:
            self._delete_quietly(LEDGER, later["id"], name, later["_etag"])
        return results[0].get("resourceBody") or {**doc, "_etag": results[0]["eTag"]}

    def _grant_etag(self, grant: Grant) -> str:
        name = grant.key.assignment_name()
        etag = self._etag(LEDGER, name, grant.version)
        if etag is None:
            current = self.get_grant(grant.key)
            etag = self._etag(LEDGER, name, grant.version)
            if current is None or current.version != grant.version or etag is None:
                raise ConcurrencyConflict(f"grant {name} is not at version {grant.version}")
        return etag

    def holds_for_request(self, request_id: str) -> list[Hold]:
        parameters = {"@requestId": request_id}
        return self._holds(GRANTS_OF_REQUEST, LEGACY_HOLDS_OF_REQUEST, parameters, lambda h: h.request_id == request_id)

    def overdue_holds(self, now: datetime) -> list[Hold]:
        at = _instant(now)
        parameters = {"@active": HoldStatus.ACTIVE.value, "@now": at}
        return self._holds(GRANTS_OVERDUE, LEGACY_HOLDS_OVERDUE, parameters,
                           lambda h: h.status is HoldStatus.ACTIVE and h.expires_at <= now)

    def all_active_holds(self) -> list[Hold]:
        parameters = {"@active": HoldStatus.ACTIVE.value}
        return self._holds(GRANTS_ACTIVE, LEGACY_HOLDS_ACTIVE, parameters, lambda h: h.status is HoldStatus.ACTIVE)

    def _holds(
        self, text: str, legacy_text: str, parameters: dict[str, Any], wanted: Callable[[Hold], bool]
    ) -> list[Hold]:
        """The wanted holds of the grant documents a query finds, and of the hold documents of the earlier
        layout its twin finds (keys whose grant document exists are read from it alone)."""
        keys: set[str] = set()
        holds: list[Hold] = []
        for doc in self._query(LEDGER, text, {k: v for k, v in parameters.items() if k in text}):
            keys.add(doc["grantKey"])
            holds.extend(h for h in _grant(doc).holds if wanted(h))
        for doc in self._query(LEDGER, legacy_text, {k: v for k, v in parameters.items() if k in legacy_text}):
            if doc["grantKey"] not in keys:
                holds.append(_legacy_hold(doc))
        return _ordered(holds)

    # ------------------------------------------------------------ audit

    def append(self, event: AuditEvent, principal_id: str | None = None) -> None:
        with _translated(f"append audit event {event.id}"):
            try:
                self._container(AUDIT).create_item(body=_event_document(event, principal_id))
            except _errors().CosmosResourceExistsError:
                raise AlreadyExists(f"audit event {event.id} already exists") from None

    def chain(self, request_id: str) -> list[AuditEvent]:
        return [_event(doc) for doc in self._query(AUDIT, CHAIN, {"@event": EVENT}, partition_key=request_id)]

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
        where = " AND ".join([EVENTS, *(AUDIT_FILTERS[name][0] for name in chosen)])
        text = f"SELECT TOP @top * FROM c WHERE {where} ORDER BY c.atOrder"
        parameters = {"@top": limit + 1, "@event": EVENT}
        parameters |= {AUDIT_FILTERS[name][1]: value for name, value in chosen.items()}
        docs = list(islice(self._query(AUDIT, text, parameters, query.request_id, page_size=limit + 1), limit + 1))
        events = [_event(doc) for doc in docs[:limit]]
        more = len(docs) > limit
        continuation = encode_continuation(format_instant(events[-1].at), events[-1].id) if more else None
        return AuditPage(events=events, continuation=continuation)

    def request_ids(self) -> Iterator[str]:
        for value in self._query(AUDIT, REQUEST_IDS, {"@event": EVENT}):
            yield str(value)

    # ------------------------------------------------------------ items, queries and etags

    def _read(self, container: str, item: str, partition_key: str, legacy: bool = False) -> dict[str, Any] | None:
        """A point read; None when the item does not exist (or, for `legacy`, its container does not)."""
        with _translated(f"read {container} {item}"):
            try:
                doc: dict[str, Any] = self._container(container).read_item(item=item, partition_key=partition_key)
            except _errors().CosmosResourceNotFoundError as exc:
                if not legacy:
                    _raise_if_container_missing(exc)
                return None
        return doc

    def _delete_quietly(self, container: str, item: str, partition_key: str, etag: str) -> None:
        """Delete a document of the earlier layout that is no longer read; a failure leaves it, harmlessly."""
        try:
            with _translated(f"delete {container} {item}"):
                self._container(container).delete_item(
                    item=item, partition_key=partition_key, etag=etag, match_condition=_if_not_modified()
                )
        except Exception as exc:
            log.info("left %s %s of the earlier layout in place: %s", container, item, exc)

    def _query(
        self,
        container: str,
        text: str,
        parameters: dict[str, Any],
        partition_key: str | None = None,
        page_size: int = 100,
        legacy: bool = False,
    ) -> Iterator[Any]:
        """Stream the results, page by page (the SDK follows its own continuation); errors translated. A
        `legacy` container that does not exist answers nothing."""
        with _translated(f"query {container}"):
            try:
                results = self._container(container).query_items(
                    query=text,
                    parameters=[{"name": name, "value": value} for name, value in parameters.items()],
                    partition_key=partition_key,
                    enable_cross_partition_query=True if partition_key is None else None,
                    max_item_count=page_size,
                )
                yield from results
            except _errors().CosmosResourceNotFoundError as exc:
                if not legacy or getattr(exc, "sub_status", None) != 1003:
                    raise

    def _remember(self, container: str, item: str, version: int, etag: str) -> None:
        with self._lock:
            self._etags[(container, item, version)] = etag
            self._etags.move_to_end((container, item, version))
            while len(self._etags) > _ETAGS_KEPT:
                self._etags.popitem(last=False)

    def _etag(self, container: str, item: str, version: int) -> str | None:
        with self._lock:
            return self._etags.get((container, item, version))


# ---------------------------------------------------------------- documents


def _request_document(record: RequestRecord, version: int) -> dict[str, Any]:
    doc = record.document()
    doc["version"] = version
    doc["id"] = RECORD_ID
    doc["docType"] = RECORD
    doc["pendingEvents"] = []  # committed in the same batch (`_write_alone` keeps them when it cannot be)
    doc["updatedOrder"] = f"{_instant(record.updated_at)} {record.request_id}"
    return doc


def _event_document(event: AuditEvent, principal_id: str | None) -> dict[str, Any]:
    doc = event.document()
    doc["docType"] = EVENT
    doc["requesterId"] = principal_id
    doc["atOrder"] = f"{doc['at']} {event.id}"
    return doc


def _grant_document(grant: Grant, version: int) -> dict[str, Any]:
    key = grant.key
    name = key.assignment_name()
    active = grant.active_holds
    deleting = grant.deleting
    return {
        "id": name,
        "grantKey": name,
        "docType": GRANT,
        "provider": key.provider,
        "principalId": key.principal_id,
        "roleDefinitionId": key.role_definition_id,
        "scope": key.scope,
        "principalType": grant.principal_type,
        "providerExpiresAt": None if grant.provider_expires_at is None else _instant(grant.provider_expires_at),
        "deleting": None if deleting is None else {
            "token": deleting.token, "since": _instant(deleting.since), "requestId": deleting.request_id
        },
        "holds": [
            {
                "requestId": h.request_id,
                "grantedAt": _instant(h.granted_at),
                "expiresAt": _instant(h.expires_at),
                "preexisting": h.preexisting,
                "status": h.status.value,
                "releasedAt": None if h.released_at is None else _instant(h.released_at),
                "principalType": h.principal_type,
            }
            for h in grant.holds
        ],
        "requestIds": [h.request_id for h in grant.holds],
        "activeHolds": len(active),
        "nextExpiry": min((_instant(h.expires_at) for h in active), default=None),
        "version": version,
    }


def _grant(doc: dict[str, Any]) -> Grant:
    key = GrantKey.of(doc["provider"], doc["principalId"], doc["roleDefinitionId"], doc["scope"])
    deleting = doc.get("deleting")
    holds = tuple(
        Hold(
            provider=key.provider,
            principal_id=key.principal_id,
            role_definition_id=key.role_definition_id,
            scope=key.scope,
            request_id=h["requestId"],
            granted_at=_parse_instant(h["grantedAt"]),
            expires_at=_parse_instant(h["expiresAt"]),
            preexisting=bool(h["preexisting"]),
            status=HoldStatus(h["status"]),
            released_at=None if h.get("releasedAt") is None else _parse_instant(h["releasedAt"]),
            principal_type=h.get("principalType"),
        )
        for h in doc["holds"]
    )
    return Grant(
        key=key,
        holds=holds,
        principal_type=doc.get("principalType"),
        provider_expires_at=None if doc.get("providerExpiresAt") is None else _parse_instant(doc["providerExpiresAt"]),
        deleting=None if deleting is None else Deletion(
            token=deleting["token"], since=_parse_instant(deleting["since"]), request_id=deleting.get("requestId")
        ),
        version=int(doc["version"]),
    )


def _legacy_hold(doc: dict[str, Any]) -> Hold:
    """A hold document of the earlier layout (one per hold)."""
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
    return AuditEvent.model_validate_json(json.dumps(_without(doc, "requesterId", "atOrder", "docType")))


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


def _batch_refused(exc: Any, request_id: str, version: int, events: list[dict[str, Any]]) -> JitgateError:
    """What a refused record batch means: its first failing operation (index 0 is the record) says why."""
    status, index = exc.status_code, exc.error_index or 0
    if status == 412 or (status == 409 and index == 0 and version > 1):  # another writer saved, or moved it
        return ConcurrencyConflict(f"request {request_id} was written meanwhile")
    if status == 409:
        what = "request" if index == 0 else f"audit event {events[index - 1]['id']}"
        return AlreadyExists(f"{what} already exists ({request_id})")
    if status == 404:
        return NotFound(f"request {request_id} does not exist")
    return _batch_error(exc, f"write request {request_id}")


def _batch_error(exc: Any, what: str) -> JitgateError:
    status = exc.status_code or 0
    if status in _TRANSIENT_STATUS:
        return TransientError(f"{what}: {exc}", retry_after=_retry_after(exc))
    return PermanentError(f"{what}: {exc}")


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
