"""`access-requests` queue → evaluate the access request."""

from __future__ import annotations

import azure.functions as func

from shared.worker import on_access_request

from ._runtime import runtime

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


@blueprint.function_name("access_requests")
@blueprint.service_bus_queue_trigger(
    arg_name="message", queue_name="%JITGATE_REQUESTS_QUEUE%", connection="ServiceBusConnection"
)
def access_requests(message: func.ServiceBusMessage) -> None:
    on_access_request(runtime().lifecycle, message.get_body())
