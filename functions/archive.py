"""Timer → export the audit chains of requests closed on each finished UTC day to the immutable archive
container (JSON Lines, one blob a day). Idempotent: a day already archived is left as it is, so the
window looks back a week and catches up on days a failed run missed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func

from ._runtime import runtime

log = logging.getLogger("jitgate.archive")

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]

LOOK_BACK = timedelta(days=7)


@blueprint.function_name("archive")
@blueprint.timer_trigger(arg_name="timer", schedule="0 30 0 * * *", use_monitor=True)  # daily, 00:30 UTC
def archive(timer: func.TimerRequest) -> None:
    archive_closed = runtime().archive
    if archive_closed is None:
        log.warning("JITGATE_ARCHIVE_ACCOUNT_URL is not set: closed requests are not archived")
        return
    now = datetime.now(UTC)
    written = archive_closed(now - LOOK_BACK, now)
    log.info("archived %d day(s) of closed requests: %s", len(written), written)
