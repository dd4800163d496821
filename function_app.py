"""Azure Functions entry point (Python v2 programming model): the app and its triggers, nothing else.

The HTTP API is the same ASGI app `jitgate serve` runs, behind AsgiFunctionApp. Neither it nor the runtime
is built here, and no Azure SDK is imported: the host imports this module to index the functions, and
everything it needs beyond that is built on the first invocation (functions/_runtime.py).
"""

from __future__ import annotations

import azure.functions as func

from functions import access_lifecycle, access_requests, access_revocations, archive, reconcile
from functions._api import LazyApi

# NB. Anonymous at the Functions level: callers are authenticated by App Service authentication (Entra ID)
# and the Teams webhook by its HMAC, both checked inside the app; a function key would add nothing.
api = LazyApi()
app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.ANONYMOUS, function_name="api")
app.register_blueprint(access_requests.blueprint)
app.register_blueprint(access_lifecycle.blueprint)
app.register_blueprint(access_revocations.blueprint)
app.register_blueprint(reconcile.blueprint)
app.register_blueprint(archive.blueprint)
