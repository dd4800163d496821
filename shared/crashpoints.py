"""Named points where a test can make the process die as if SIGKILLed (like etcd's failpoints).

`JITGATE_CRASHPOINT=grant.after_provider` kills the process the first time that point is reached.
Unset (always, in production) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_state.approved",  # decided and written with its audit events; grant command not sent
    "grant.after_provider",  # assignment created; revoke not scheduled, state still `approved`
    "grant.after_schedule",  # revoke scheduled; state still `approved`
    "after_state.active",  # state `active` written with its audit events; nobody told yet
    "revoke.after_release",  # hold released with the intent to delete the assignment; not yet deleted
    "revoke.after_delete",  # assignment deleted and confirmed gone; intent not cleared, state still `active`
    "after_state.revoked",  # state `revoked` written with its audit events; nobody told yet
)


def crashpoint(name: str) -> None:
    if os.environ.get("JITGATE_CRASHPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
