"""ActivityReader over Azure Monitor Logs (`azure-monitor-query`): what a principal did at a scope during
its grant window, from the `AzureActivity` table of a Log Analytics workspace (KQL)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import httpx

from ...clock import SystemClock
from ...domain.audit import format_instant
from ...domain.errors import PermanentError, TransientError
from ...domain.ids import is_guid
from ...ports import Clock
from ..http import is_transient_status, retry_after
from .arm import checked_scope

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import LogsQueryClient

# The claim that carries the caller's Entra object id; `Caller` holds a UPN for users, an id for apps.
_OBJECT_ID_CLAIM: Final = "http://schemas.microsoft.com/identity/claims/objectidentifier"
MAX_OPERATIONS: Final = 100
_WRITE_SUFFIXES: Final = ("/WRITE", "/DELETE")


class AzureActivity:
    """ActivityReader port over the `AzureActivity` table.

    `credential_or_client` is a TokenCredential (the LogsQueryClient is then built on first use, against
    `endpoint` when given: a sovereign cloud or a local emulator) or a ready LogsQueryClient.

    The summary counts completed operations (each ARM operation logs Started and then Succeeded or
    Failed; only the outcome is counted) by operation name, names the write and delete operations and
    counts failures. A partial result from the service is returned with `"partial": true` and its error.
    NB. Activity logs reach the workspace minutes after the fact, so a summary taken at revoke time can
    miss the last minutes of the window; `asOf` says when it was taken.
    """

    def __init__(
        self,
        workspace_id: str,
        credential_or_client: TokenCredential | LogsQueryClient | None = None,
        endpoint: str | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self._given = credential_or_client
        self._endpoint = endpoint
        self._client: LogsQueryClient | None = None
        self._call_options: dict[str, Any] = {}
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()

    def summarize(self, principal_id: str, scope: str, start: datetime, end: datetime) -> dict[str, Any] | None:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
        from azure.monitor.query import LogsQueryPartialResult

        query = activity_query(principal_id, scope, start, end)
        what = f"AzureActivity of {principal_id} at {scope}"
        client = self._logs()
        try:
            result = client.query_workspace(self.workspace_id, query, timespan=(start, end), **self._call_options)
        except HttpResponseError as exc:
            status = exc.status_code or 0
            text = f"{what}: {status} {exc.reason or ''} {getattr(exc.error, 'code', '') or ''}".rstrip()
            if status == 401 or is_transient_status(status):
                header = (getattr(exc.response, "headers", None) or {}).get("Retry-After")
                wait = retry_after(httpx.Headers({"Retry-After": header})) if header else None
                raise TransientError(text, retry_after=wait) from exc
            raise PermanentError(text) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
        summary: dict[str, Any] = {
            "source": "AzureActivity",
            "workspace": self.workspace_id,
            "from": format_instant(start),
            "to": format_instant(end),
            "asOf": format_instant(self._clock.now()),
            "partial": False,
        }
        if isinstance(result, LogsQueryPartialResult):
            tables = result.partial_data
            error = result.partial_error
            summary["partial"] = True
            summary["error"] = f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}".strip(": ")
        else:
            tables = result.tables
        rows = [dict(zip(table.columns, row, strict=False)) for table in tables[:1] for row in table.rows]
        return summary | _counts(rows)

    def _logs(self) -> LogsQueryClient:
        with self._lock:
            if self._client is not None:
                return self._client
            given = self._given
            if given is not None and hasattr(given, "query_workspace"):
                client = cast("LogsQueryClient", given)
            else:
                from azure.monitor.query import LogsQueryClient

                if given is None:
                    from azure.identity import DefaultAzureCredential

                    given = DefaultAzureCredential()
                options = {"endpoint": self._endpoint} if self._endpoint else {}
                client = LogsQueryClient(given, **options)
                if self._endpoint and self._endpoint.startswith("http://"):
                    # A local emulator: bearer tokens are otherwise refused over plain HTTP.
                    self._call_options = {"enforce_https": False}
            self._client = client
            return client


def activity_query(principal_id: str, scope: str, start: datetime, end: datetime) -> str:
    """The KQL: completed operations of the principal at or below the scope, per operation name."""
    principal = principal_id.strip().lower()
    if not is_guid(principal):
        raise PermanentError(f"principal id {principal_id!r} is not an Entra object id")
    resource = _kql_string(checked_scope(scope).lower())
    return "\n".join((
        "AzureActivity",
        f"| where TimeGenerated between (datetime({format_instant(start)}) .. datetime({format_instant(end)}))",
        f"| where Caller =~ '{principal}' or tostring(Claims_d['{_OBJECT_ID_CLAIM}']) =~ '{principal}'",
        f"| where _ResourceId =~ {resource} or _ResourceId startswith strcat({resource}, '/')",
        "| where ActivityStatusValue in~ ('Success', 'Succeeded', 'Failure', 'Failed')",
        "| summarize Count = count(), Failures = countif(ActivityStatusValue in~ ('Failure', 'Failed'))"
        " by OperationNameValue",
        "| order by Count desc, OperationNameValue asc",
        f"| take {MAX_OPERATIONS}",
    ))


def _counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_operation = {str(r["OperationNameValue"]): int(r.get("Count") or 0) for r in rows}
    failed = {str(r["OperationNameValue"]): int(r.get("Failures") or 0) for r in rows if r.get("Failures")}
    writes = sorted(op for op in by_operation if op.upper().endswith(_WRITE_SUFFIXES))
    return {
        "operations": sum(by_operation.values()),
        "byOperation": by_operation,
        "writeOperations": writes,
        "writes": sum(by_operation[op] for op in writes),
        "failures": sum(failed.values()),
        "failedOperations": failed,
        "truncated": len(rows) >= MAX_OPERATIONS,
    }


def _kql_string(value: str) -> str:
    """A KQL string literal: single-quoted, with backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

