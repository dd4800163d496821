"""Azure: the adapters `JITGATE_MODE=azure` and the function app use. None imports an Azure SDK at import time."""
