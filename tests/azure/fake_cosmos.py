"""A hand-written Cosmos DB account behind the slice of `azure-cosmos`'s ContainerProxy that CosmosStore calls.

Service semantics kept: an item is identified by (partition key value, id); create of a taken id is 409;
replace or delete with a stale etag under If-Match is 412; every write gives the item a new `_etag`; items
come back with the system properties (`_rid`, `_self`, `_etag`, `_attachments`, `_ts`); a query is scoped to
one partition when given a partition key and is cross-partition otherwise; results are paged by
`max_item_count` behind the SDK's own `ItemPaged`, with a continuation token between pages; a container
that does not exist answers 404 with sub-status 1003.

A transactional batch (`execute_item_batch`) is all or nothing within one partition key: at most 100
operations and 2 MB (else 400 / 413 for the whole request), every body in that partition; the first
operation that fails makes it raise `CosmosBatchOperationError` with that operation's index and status
(409 taken id, 404 missing item, 412 etag mismatch under `if_match_etag`), the others answering 424, and
nothing is written. A successful batch returns one result per operation: statusCode, eTag, resourceBody.

Queries: only the exact parameterised statements CosmosStore issues are understood. The statement is
parsed into SELECT [DISTINCT VALUE c.x | TOP @p *] FROM c [WHERE clause AND clause ...] [ORDER BY c.x], and
every clause must be one of CLAUSES, written out here independently of the adapter, so that a change of
query text in the adapter fails loudly here instead of being interpreted by guesswork.
`fail_next` makes the next call of a container method raise a given SDK error.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.paging import ItemPaged
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

PARTITION_KEYS = {"requests": "requestId", "ledger": "grantKey", "audit": "requestId"}
_FORBIDDEN_IN_ID = set("/\\?#")

Predicate = Callable[[dict[str, Any], dict[str, Any]], bool]


def _path(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _UNDEFINED
        value = value[part]
    return value


class _Undefined:
    pass


_UNDEFINED = _Undefined()


def _compare(field: str, op: str, param: str) -> Predicate:
    def predicate(doc: dict[str, Any], params: dict[str, Any]) -> bool:
        left, right = _path(doc, field), params[param]
        # Comparing an undefined property, or values of different types, is undefined: not a match.
        if left is _UNDEFINED or type(left) is not type(right):
            return False
        return bool({"=": left == right, "<": left < right, "<=": left <= right, ">": left > right,
                     ">=": left >= right}[op])

    return predicate


def _contains(field: str, param: str) -> Predicate:
    def predicate(doc: dict[str, Any], params: dict[str, Any]) -> bool:
        values = _path(doc, field)
        return isinstance(values, list) and params[param] in values

    return predicate


CLAUSES: dict[str, Predicate] = {
    "ARRAY_CONTAINS(@states, c.state)": lambda doc, p: _path(doc, "state") in p["@states"],
    "ARRAY_LENGTH(c.pendingEvents) > 0": lambda doc, p: bool(doc.get("pendingEvents")),
    "c.docType = @record": _compare("docType", "=", "@record"),
    "(NOT IS_DEFINED(c.docType) OR c.docType = @event)": lambda doc, p: (
        _path(doc, "docType") is _UNDEFINED or _compare("docType", "=", "@event")(doc, p)
    ),
    "c.activeHolds > 0": lambda doc, p: type(doc.get("activeHolds")) is int and doc["activeHolds"] > 0,
    "c.nextExpiry <= @now": _compare("nextExpiry", "<=", "@now"),
    "ARRAY_CONTAINS(c.requestIds, @requestId)": _contains("requestIds", "@requestId"),
    "c.status = @active": _compare("status", "=", "@active"),
    "c.expiresAt <= @now": _compare("expiresAt", "<=", "@now"),
    "c.requestId = @requestId": _compare("requestId", "=", "@requestId"),
    "(c.requesterId = @principalId OR c.actor.principalId = @principalId)": lambda doc, p: (
        _compare("requesterId", "=", "@principalId")(doc, p)
        or _compare("actor.principalId", "=", "@principalId")(doc, p)
    ),
    "c.type = @type": _compare("type", "=", "@type"),
    "c.at >= @since": _compare("at", ">=", "@since"),
    "c.at < @until": _compare("at", "<", "@until"),
    "c.atOrder > @after": _compare("atOrder", ">", "@after"),
}

_STATEMENT = re.compile(
    r"^SELECT (?:(?P<distinct>DISTINCT VALUE c\.(?P<value>\w+))|(?:TOP (?P<top>@\w+) )?\*) FROM c"
    r"(?: WHERE (?P<where>.+?))?(?: ORDER BY c\.(?P<order>\w+))?$"
)


class FakeCosmosAccount:
    """One database with the containers jitgate's infrastructure creates (name → partition key path)."""

    def __init__(self, containers: dict[str, str] | None = None) -> None:
        self._containers = {
            name: FakeContainer(self, name, key) for name, key in (containers or PARTITION_KEYS).items()
        }
        self._failures: dict[str, list[BaseException]] = {}
        self.queries: list[tuple[str, str, Any]] = []  # (container, statement, partition key or None)
        self.containers_made: list[str] = []

    def container(self, name: str) -> FakeContainer:
        """What `database.get_container_client(name)` returns (no call is made until it is used)."""
        self.containers_made.append(name)
        return self._containers.get(name) or FakeContainer(self, name, None)

    def fail_next(self, operation: str, error: BaseException) -> None:
        """Make the next call of `operation` (a ContainerProxy method name) raise `error`."""
        self._failures.setdefault(operation, []).append(error)

    def _failure(self, operation: str) -> BaseException | None:
        failures = self._failures.get(operation)
        return failures.pop(0) if failures else None


class FakeContainer:
    """`ContainerProxy`: create_item, read_item, replace_item, upsert_item, delete_item, execute_item_batch,
    query_items."""

    def __init__(self, account: FakeCosmosAccount, name: str, partition_key: str | None) -> None:
        self.account, self.name, self.partition_key = account, name, partition_key
        self._items: dict[tuple[Any, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ items

    def create_item(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("create_item")
            key = self._key_of(body)
            if key in self._items:
                raise CosmosResourceExistsError(
                    status_code=409, message="Entity with the specified id already exists in the system."
                )
            return self._store(key, body)

    def read_item(self, item: str, partition_key: Any, **_: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("read_item")
            stored = self._items.get((partition_key, item))
            if stored is None:
                raise _not_found()
            return copy.deepcopy(stored)

    def replace_item(
        self,
        item: str,
        body: dict[str, Any],
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        with self._lock:
            self._enter("replace_item")
            key = self._key_of(body)
            assert key[1] == item, "replace_item: the body's id must be the item replaced"
            stored = self._items.get(key)
            if stored is None:
                raise _not_found()
            if match_condition == MatchConditions.IfNotModified and etag != stored["_etag"]:
                raise CosmosAccessConditionFailedError(
                    status_code=412, message="Operation cannot be performed because one of the specified precondition"
                    " criteria was not met."
                )
            return self._store(key, body)

    def upsert_item(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        with self._lock:
            self._enter("upsert_item")
            return self._store(self._key_of(body), body)

    def delete_item(
        self,
        item: str,
        partition_key: Any,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            self._enter("delete_item")
            stored = self._items.get((partition_key, item))
            if stored is None:
                raise _not_found()
            if match_condition == MatchConditions.IfNotModified and etag != stored["_etag"]:
                raise CosmosAccessConditionFailedError(status_code=412, message="precondition failed")
            del self._items[(partition_key, item)]

    def execute_item_batch(
        self, batch_operations: list[tuple[Any, ...]], partition_key: Any, **_: Any
    ) -> list[dict[str, Any]]:
        with self._lock:
            self._enter("execute_item_batch")
            if len(batch_operations) > 100:
                raise CosmosHttpResponseError(
                    status_code=400, message="Batch request has more operations than what is supported."
                )
            if sum(len(repr(operation)) for operation in batch_operations) > 2 * 1024 * 1024:
                raise CosmosHttpResponseError(status_code=413, message="Request size is too large.")
            saved = dict(self._items)
            results: list[dict[str, Any]] = []
            for index, operation in enumerate(batch_operations):
                status, result = self._operation(operation, partition_key)
                if status >= 400:
                    self._items = saved  # all or nothing
                    responses = [{"statusCode": 424}] * len(batch_operations)
                    responses[index] = {"statusCode": status}
                    raise CosmosBatchOperationError(
                        error_index=index,
                        headers={},
                        status_code=status,
                        message=f"There was an error in the transactional batch on index {index}.",
                        operation_responses=responses,
                    )
                results.append({"statusCode": status, **result})
            return results

    def _operation(self, operation: tuple[Any, ...], partition_key: Any) -> tuple[int, dict[str, Any]]:
        """One batch operation as the SDK formats it: (kind, args[, {"if_match_etag": ...}])."""
        kind, args = operation[0], operation[1]
        options = operation[2] if len(operation) > 2 else {}
        assert set(options) <= {"if_match_etag"}, f"the fake does not know the batch options {options}"
        if kind in ("create", "upsert"):
            (body,) = args
            key = self._key_of(body)
            assert key[0] == partition_key, "every operation of a batch must be in its partition key"
            if kind == "create" and key in self._items:
                return 409, {}
            stored = self._store(key, body)
            return (201 if kind == "create" else 200), {"eTag": stored["_etag"], "resourceBody": stored}
        if kind in ("replace", "delete"):
            item = args[0]
            stored = self._items.get((partition_key, item))
            if stored is None:
                return 404, {}
            if options.get("if_match_etag") not in (None, stored["_etag"]):
                return 412, {}
            if kind == "delete":
                del self._items[(partition_key, item)]
                return 204, {}
            key = self._key_of(args[1])
            assert key == (partition_key, item), "replace: the body's id and partition key must be the item's"
            stored = self._store(key, args[1])
            return 200, {"eTag": stored["_etag"], "resourceBody": stored}
        raise AssertionError(f"the fake does not know the batch operation {kind!r}")

    # ------------------------------------------------------------ queries

    def query_items(
        self,
        query: str,
        parameters: list[dict[str, Any]] | None = None,
        partition_key: Any = None,
        enable_cross_partition_query: bool | None = None,
        max_item_count: int | None = None,
        **_: Any,
    ) -> ItemPaged[Any]:
        with self._lock:
            self._enter("query_items")
            if partition_key is None and enable_cross_partition_query is False:
                raise CosmosHttpResponseError(
                    status_code=400, message="Cross partition query is required but disabled."
                )
            self.account.queries.append((self.name, query, partition_key))
            results = self._run(query, {p["name"]: p["value"] for p in parameters or []}, partition_key)
        page_size = max_item_count or 100

        def get_next(token: str | None) -> tuple[list[Any], int]:
            start = int(token or 0)
            return results[start : start + page_size], start + page_size

        def extract_data(page: tuple[list[Any], int]) -> tuple[str | None, Iterator[Any]]:
            items, end = page
            return (str(end) if end < len(results) else None), iter(items)

        return ItemPaged(get_next, extract_data)

    def _run(self, query: str, params: dict[str, Any], partition_key: Any) -> list[Any]:
        match = _STATEMENT.match(query)
        assert match is not None, f"the fake does not understand the statement: {query}"
        clauses = match["where"].split(" AND ") if match["where"] else []
        unknown = [clause for clause in clauses if clause not in CLAUSES]
        assert not unknown, f"the fake does not understand the clause(s) {unknown} of: {query}"
        docs = [
            copy.deepcopy(doc)
            for (key, _), doc in self._items.items()
            if partition_key is None or key == partition_key
        ]
        docs = [doc for doc in docs if all(CLAUSES[clause](doc, params) for clause in clauses)]
        if match["order"]:
            order = match["order"]
            docs = sorted((d for d in docs if order in d), key=lambda d: d[order])
        if match["top"]:
            docs = docs[: params[match["top"]]]
        if match["distinct"]:
            values = [_path(doc, match["value"]) for doc in docs]
            return list(dict.fromkeys(v for v in values if v is not _UNDEFINED))
        return docs

    # ------------------------------------------------------------ helpers

    def _enter(self, operation: str) -> None:
        failure = self.account._failure(operation)
        if failure is not None:
            raise failure
        if self.partition_key is None:
            raise _not_found(sub_status=1003, message=f"Resource Not Found: container {self.name}")

    def _key_of(self, body: dict[str, Any]) -> tuple[Any, str]:
        assert self.partition_key is not None
        item_id = body.get("id")
        if not isinstance(item_id, str) or not item_id or _FORBIDDEN_IN_ID & set(item_id):
            raise CosmosHttpResponseError(status_code=400, message=f"invalid id {item_id!r}")
        if self.partition_key not in body:
            raise CosmosHttpResponseError(status_code=400, message="the partition key is missing from the document")
        return body[self.partition_key], item_id

    def _store(self, key: tuple[Any, str], body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        for system in ("_rid", "_self", "_etag", "_attachments", "_ts"):
            stored.pop(system, None)
        rid = uuid.uuid4().hex[:12]
        stored |= {"_rid": rid, "_self": f"dbs/jitgate/colls/{self.name}/docs/{rid}/",
                   "_etag": f'"{uuid.uuid4()}"', "_attachments": "attachments/", "_ts": 1_764_000_000}
        self._items[key] = stored
        return copy.deepcopy(stored)


def _not_found(sub_status: int = 0, message: str = "Entity with the specified id does not exist in the system.") -> (
    CosmosResourceNotFoundError
):
    return CosmosResourceNotFoundError(status_code=404, message=message, sub_status=sub_status or None)
