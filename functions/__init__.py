"""Azure Functions triggers, one Blueprint per module, registered by ../function_app.py. Each trigger only
parses its input, calls its handler in shared.worker and returns: transient faults raise, so the host
abandons the message and Service Bus redelivers it; invalid input is handled (and audited) by the handler."""
