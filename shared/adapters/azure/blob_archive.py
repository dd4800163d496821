"""Daily archive of closed requests' audit chains to Azure Blob Storage, as JSON Lines.

One blob per UTC day, `{prefix}/YYYY/MM/DD.jsonl`, holding the whole audit chain of every request that
closed that day (its terminal event fell in the day): one event per line, in the exact canonical JSON
that its hash covers, so `jitgate audit verify` logic can re-check the archive on its own. The container is
meant to be immutable (time-based retention or version-level immutability, set up by infrastructure, which
is why this adapter never creates it): a day's blob is written once and never overwritten.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from ...domain.audit import AuditEvent, ChainReport, EventType, canonical_json, settled, verify_chain
from ...domain.errors import JitgateError, PermanentError, TransientError
from ...domain.lifecycle import RequestRecord, RequestState
from ...ports import AuditPage, AuditQuery

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import ContainerClient

log = logging.getLogger("jitgate.archive")

# The event that closes a request, by the state it closed in.
CLOSING_EVENTS: Final[dict[RequestState, EventType]] = {
    RequestState.REVOKED: EventType.GRANT_REVOKED,
    RequestState.REJECTED: EventType.REQUEST_REJECTED,
    RequestState.DENIED: EventType.REQUEST_DENIED,
    RequestState.EXPIRED: EventType.REQUEST_EXPIRED,
    RequestState.FAILED: EventType.GRANT_FAILED,
}
_PAGE: Final = 500


class ClosedRequestSource(Protocol):
    """What the archive reads: a RequestStore and AuditStore in one (SqliteStore, the Cosmos store)."""

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def chain(self, request_id: str) -> list[AuditEvent]: ...

    def query(self, query: AuditQuery) -> AuditPage: ...


class BlobAuditArchive:
    """Writes each finished UTC day's closed-request chains to `container` (which must exist).

    `archive_closed(store, since, until)` covers every day from the one `since` falls in to the last one
    that ended at least `settle` before `until` (so late audit writes of the day are in), and returns the
    day blobs' names. It is idempotent: a day whose blob exists is left alone, whoever wrote it. A day
    with nothing closed gets an empty blob, so an auditor can tell "nothing closed" from "not exported".
    """

    def __init__(
        self,
        account_url: str,
        container: str = "audit-archive",
        credential: TokenCredential | Any | None = None,
        *,
        prefix: str = "closed-requests",
        settle: timedelta = timedelta(minutes=10),
        container_client: ContainerClient | None = None,
    ) -> None:
        self.account_url = account_url
        self.container = container
        self.prefix = prefix.strip("/")
        self.settle = settle
        self._credential = credential
        self._container: ContainerClient | None = container_client
        self._lock = threading.Lock()

    def blob_name(self, day: datetime) -> str:
        return f"{self.prefix}/{day:%Y/%m/%d}.jsonl"

    def archive_closed(self, store: ClosedRequestSource, since: datetime, until: datetime) -> list[str]:
        names = []
        for day in _days(since, until - self.settle):
            name = self.blob_name(day)
            self._archive_day(store, day, name)
            names.append(name)
        return names

    def _archive_day(self, store: ClosedRequestSource, day: datetime, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError
        from azure.storage.blob import ContentSettings

        blob = self._client().get_blob_client(name)
        try:
            if blob.exists():
                log.info("archive %s exists; left as it is", name)
                return
        except AzureError as exc:
            raise _storage_error(exc, f"check archive {name}") from exc
        chains = self._closed_chains(store, day, day + timedelta(days=1))
        lines = [canonical_json(event.document()) for chain, _ in chains for event in chain]
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        broken = sum(1 for _, report in chains if not report.ok)
        if broken:
            log.warning("archive %s: %d chain(s) fail verification; archived as stored", name, broken)
        metadata = {
            "day": f"{day:%Y-%m-%d}",
            "requests": str(len(chains)),
            "events": str(len(lines)),
            "brokenchains": str(broken),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        try:
            # NB. overwrite=False sends If-None-Match: *, so a concurrent export of the same day cannot
            # replace what the first one wrote.
            blob.upload_blob(
                data,
                overwrite=False,
                metadata=metadata,
                content_settings=ContentSettings(content_type="application/x-ndjson; charset=utf-8"),
            )
        except ResourceExistsError:
            log.info("archive %s was written meanwhile; left as it is", name)
            return
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                log.info("archive %s was written meanwhile; left as it is", name)
                return
            raise _storage_error(exc, f"write archive {name}") from exc
        log.info("archived %d closed request(s), %d event(s) to %s", len(chains), len(lines), name)

    def _closed_chains(
        self, store: ClosedRequestSource, start: datetime, end: datetime
    ) -> list[tuple[list[AuditEvent], ChainReport]]:
        """Chains of the requests whose closing event is in [start, end), by request id, each verified against
        its record."""
        candidates: set[str] = set()
        for event_type in CLOSING_EVENTS.values():
            continuation = None
            while True:
                page = store.query(
                    AuditQuery(type=event_type.value, since=start, until=end, limit=_PAGE, continuation=continuation)
                )
                candidates.update(event.request_id for event in page.events)
                continuation = page.continuation
                if not continuation:
                    break
        chains = []
        for request_id in sorted(candidates):
            record, chain, report = _verified_chain(store, request_id)
            if record is None or record.state not in CLOSING_EVENTS:
                continue  # still open (e.g. an id-reuse rejection of a live request), or no request at all
            closing = next((e for e in chain if e.type is CLOSING_EVENTS[record.state]), None)
            if closing is not None and start <= closing.at < end:
                chains.append((chain, report))
        return chains

    def _client(self) -> ContainerClient:
        with self._lock:
            if self._container is None:
                from azure.storage.blob import BlobServiceClient

                credential = self._credential
                if credential is None:
                    from azure.identity import DefaultAzureCredential

                    credential = DefaultAzureCredential()
                service = BlobServiceClient(self.account_url, credential=credential)
                self._container = service.get_container_client(self.container)
            return self._container


def _verified_chain(
    store: ClosedRequestSource, request_id: str
) -> tuple[RequestRecord | None, list[AuditEvent], ChainReport]:
    """A request's record and chain, and the chain verified against the record, read again while it fails."""
    read: list[tuple[RequestRecord | None, list[AuditEvent]]] = []

    def once() -> ChainReport:
        record = store.get_request(request_id)  # NB. before the chain: see `settled`
        read[:] = [(record, store.chain(request_id))]
        return verify_chain(request_id, read[0][1], None if record is None else record.anchor())

    report = settled(once)
    return read[0][0], read[0][1], report


def _days(since: datetime, finished_before: datetime) -> list[datetime]:
    """UTC midnights from the day of `since` to the last day that ended at or before `finished_before`."""
    day = datetime.combine(since.astimezone(UTC).date(), time(), UTC)
    days = []
    while day + timedelta(days=1) <= finished_before:
        days.append(day)
        day += timedelta(days=1)
    return days


def _storage_error(exc: Exception, what: str) -> JitgateError:
    """A Blob Storage failure as jitgate's error: connection faults, throttling and 5xx are transient."""
    status = int(getattr(exc, "status_code", None) or 0)
    code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or type(exc).__name__
    if status == 404:
        return PermanentError(f"{what}: the archive container does not exist ({code})")
    if status in (0, 401, 408, 429) or status >= 500:  # 0: no response at all (connection, timeout)
        return TransientError(f"{what}: {status or ''} {code}".replace("  ", " "))
    return PermanentError(f"{what}: {status} {code}")
