"""Named points where a test can make the process die as if SIGKILLed (like etcd's failpoints).

`JITGATE_CRASHPOINT=grant.after_provider` kills the process the first time that point is reached.
Unset (always, in production) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_state.approved",  # decided and written; grant command not sent, audit outbox not flushed
    "grant.after_provider",  # assignment created; revoke not scheduled, state still `approved`
    "grant.after_schedule",  # revoke scheduled; state still `approved`
    "after_state.active",  # state `active` written; audit outbox not yet flushed
    "revoke.after_release",  # hold released; assignment not yet deleted
    "revoke.after_delete",  # assignment deleted and confirmed gone; state still `active`
    "after_state.revoked",  # state `revoked` written; audit outbox not yet flushed
)


def crashpoint(name: str) -> None:
    if os.environ.get("JITGATE_CRASHPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
