"""google-api-core exceptions (what the gRPC clients raise) translated into jitgate's error types."""

from __future__ import annotations

from contextlib import AbstractContextManager

from ...domain.errors import JitgateError, NotFound, PermanentError, TransientError
from ..sdk_errors import translated


def google_translated(what: str) -> AbstractContextManager[None]:
    """Run the block with Google API errors mapped: NOT_FOUND, transient codes, the rest permanent."""
    return translated(what, _translate)


def _translate(exc: Exception, what: str) -> JitgateError | None:
    from google.api_core import exceptions as g
    from google.auth.exceptions import TransportError

    text = f"{what}: {exc}"
    if isinstance(exc, g.NotFound):
        return NotFound(text)
    if isinstance(
        exc,
        g.ServiceUnavailable | g.DeadlineExceeded | g.ResourceExhausted | g.InternalServerError | g.Aborted
        | g.Unknown | g.RetryError | TransportError,
    ):
        return TransientError(text)
    if isinstance(exc, g.GoogleAPICallError):
        return PermanentError(text)
    return None


def ack_id_failures(exc: Exception) -> dict[str, str]:
    """The per-ack-id failures an exactly-once subscription reports (google.rpc.ErrorInfo metadata: ack id ->
    `PERMANENT_FAILURE_INVALID_ACK_ID`, `TRANSIENT_FAILURE_*`), as the client library reads them."""
    from google.api_core import exceptions as g
    from google.rpc.error_details_pb2 import ErrorInfo

    if not isinstance(exc, g.GoogleAPICallError):
        return {}
    for detail in exc.details or []:
        if isinstance(detail, ErrorInfo):
            return dict(detail.metadata)
    return {}
