"""`access-revocations` queue → revoke, at expiry or early.

NB. A trigger of its own, not a second look at `access-lifecycle`: on Flex Consumption each Service Bus function
scales on instances of its own, with host.json's `maxConcurrentCalls` per instance, so a backlog of grants
neither fills the calls nor the instances that serve revokes (docs/azure.md, host.json choices)."""

from __future__ import annotations

import azure.functions as func

from shared.worker import on_lifecycle_command

from ._runtime import runtime

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


@blueprint.function_name("access_revocations")
@blueprint.service_bus_queue_trigger(
    arg_name="message", queue_name="%JITGATE_REVOCATIONS_QUEUE%", connection="ServiceBusConnection"
)
def access_revocations(message: func.ServiceBusMessage) -> None:
    current = runtime()
    on_lifecycle_command(
        current.lifecycle, message.get_body(), message.delivery_count or 1, current.settings.max_delivery_count
    )
