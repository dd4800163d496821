"""`access-lifecycle` queue → grant or expire-request (and a revoke scheduled here before revokes had a queue of
their own, functions/access_revocations.py)."""

from __future__ import annotations

import azure.functions as func

from shared.worker import on_lifecycle_command

from ._runtime import runtime

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


@blueprint.function_name("access_lifecycle")
@blueprint.service_bus_queue_trigger(
    arg_name="message", queue_name="%JITGATE_LIFECYCLE_QUEUE%", connection="ServiceBusConnection"
)
def access_lifecycle(message: func.ServiceBusMessage) -> None:
    current = runtime()
    # NB. The trigger counts deliveries from 1, as the port does; on the last one a grant fails visibly.
    on_lifecycle_command(
        current.lifecycle, message.get_body(), message.delivery_count or 1, current.settings.max_delivery_count
    )
