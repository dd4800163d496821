"""Timer → flush audit outboxes left by crashed handlers, then reconcile (overdue holds, orphans, stale
requests). The host runs a timer function on one instance at a time."""

from __future__ import annotations

import azure.functions as func

from shared.worker import on_reconcile

from ._runtime import runtime

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


@blueprint.function_name("reconcile")
@blueprint.timer_trigger(arg_name="timer", schedule="%JITGATE_RECONCILE_SCHEDULE%", use_monitor=True)
def reconcile(timer: func.TimerRequest) -> None:
    on_reconcile(runtime().lifecycle)
