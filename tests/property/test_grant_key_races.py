"""One writer per grant key, under concurrent grants and revokes (issue #10, item 2).

Hypothesis drives a few requests on one or two shared grant keys: each is granted (some twice, as a
duplicate delivery), many are revoked early (by the revoke command or by the requester), and reconcile may
run alongside. Every handler runs in its own real thread, but a scheduler lets only one of them run at a
time and switches between them at every store call, every provider call and every backoff sleep, in an
order Hypothesis draws (and shrinks). It runs over the fake store and over the real SQLite store.

The provider records every call in one global sequence, together with the ledger as it stood at that
moment, and the properties are checked on that history, not only on the end state:
  R1 no `delete_assignment` is made while any hold on its key is active in the ledger;
  R2 once everything has settled, an assignment exists for a key exactly when an active hold on it does,
     and no deletion intent is left standing.

A handler that gives up with a transient error (it waited for a deletion that did not finish in time) is
run again, as the bus would deliver its message again. Time stands still, so no lease runs out.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import event as statistic
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.azure.roles import resolve_builtin_role
from shared.adapters.embedded.store import SqliteStore
from shared.domain.errors import ConcurrencyConflict, TransientError
from shared.domain.ledger import Assignment, GrantKey
from shared.domain.policy import Policy
from shared.lifecycle import Backends, Lifecycle
from tests.fakes.bus import FakeBus
from tests.fakes.clock import FakeClock
from tests.fakes.grants import FakeDirectory, FakeGrantProvider, FakeNotifier
from tests.fakes.store import FakeStore
from tests.fakes.world import ALICE, DEV_RG, JANE, POLICY, access_request, body

PRINCIPALS = (JANE, ALICE)
ATTEMPTS = 12  # deliveries of one message before the test stops retrying it concurrently


# ---------------------------------------------------------------- the scheduler


class Scheduler:
    """Runs tasks in real threads, one at a time: a task runs until its next `pause()` (or its end), then
    the scheduler picks which parked task goes on. Each drawn choice names a task (`choice % 8`, among those
    ready) and how many turns in a row it gets while it stays ready (`2 ** (choice // 8)`: 1 to 64), so that
    runs interleave finely as well as let one writer go far (wait out another) while the others stall. Once
    the choices are used up: round robin, a turn each."""

    def __init__(self, choices: list[int]) -> None:
        self._choices = iter(choices)
        self._cv = threading.Condition()
        self._turn: int | None = None
        self._parked: set[int] = set()
        self._done: set[int] = set()
        self._local = threading.local()
        self.on = False
        self.errors: list[BaseException] = []

    def pause(self) -> None:
        """A point where another task may run first. Outside `run` (or from the main thread): no-op."""
        me: int | None = getattr(self._local, "task", None)
        if not self.on or me is None:
            return
        with self._cv:
            self._turn = None
            self._parked.add(me)
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._turn == me)
            self._parked.discard(me)

    def run(self, tasks: list[Callable[[], None]]) -> None:
        def worker(n: int, task: Callable[[], None]) -> None:
            self._local.task = n
            self.pause()  # wait for the first turn
            try:
                task()
            except BaseException as exc:  # raised in the test's thread below
                self.errors.append(exc)
            finally:
                with self._cv:
                    self._done.add(n)
                    self._turn = None
                    self._cv.notify_all()

        threads = [threading.Thread(target=worker, args=(n, task), daemon=True) for n, task in enumerate(tasks)]
        self.on = True
        for thread in threads:
            thread.start()
        everyone = set(range(len(tasks)))
        turn, current, burst = 0, -1, 0
        while True:
            with self._cv:
                settled = self._cv.wait_for(
                    lambda: self._turn is None and self._parked | self._done == everyone, timeout=60
                )
                assert settled, "a task neither paused nor finished within a minute"
                ready = sorted(self._parked)
                if not ready:
                    break
                if burst == 0 or current not in ready:
                    choice = next(self._choices, None)
                    if choice is None:
                        current, burst = ready[turn % len(ready)], 1
                    else:
                        current, burst = ready[choice % 8 % len(ready)], 2 ** (choice // 8)
                self._turn = current
                burst -= 1
                turn += 1
                self._cv.notify_all()
        for thread in threads:
            thread.join(timeout=10)
        self.on = False
        if self.errors:
            raise self.errors[0]


# ---------------------------------------------------------------- what happened, in one sequence


@dataclass
class History:
    """Every provider call and every ledger write, in the order they happened."""

    keys: dict[str, GrantKey]  # assignment name -> grant key
    entries: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def tail(self) -> str:
        return "\n".join(self.entries[-40:])


class Paused:
    """A port whose every call is a scheduling point first; `after` sees each call once it returned."""

    def __init__(self, inner: Any, scheduler: Scheduler, before: Callable[[str, tuple[Any, ...]], None],
                 after: Callable[[str, tuple[Any, ...], Any], None]) -> None:
        self._inner, self._scheduler, self._before, self._after = inner, scheduler, before, after

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._scheduler.pause()
            self._before(name, args)
            result = attr(*args, **kwargs)
            self._after(name, args, result)
            return result

        return call


# ---------------------------------------------------------------- one run


@dataclass(frozen=True)
class Plan:
    """Who asks for what, and what happens to each request."""

    keys: int
    requests: list[tuple[int, bool, str]]  # (key, granted twice?, revoke: "" | "command" | "requester")
    reconcile: bool


PLANS = st.builds(
    Plan,
    keys=st.integers(1, 2),
    requests=st.lists(
        st.tuples(st.integers(0, 1), st.booleans(), st.sampled_from(["", "command", "requester"])),
        min_size=2,
        max_size=5,
    ),
    reconcile=st.booleans(),
)


@contextmanager
def stores() -> Iterator[list[tuple[str, Any]]]:
    with tempfile.TemporaryDirectory() as tmp, closing(SqliteStore(Path(tmp) / "store.db")) as sqlite:
        yield [("fake", FakeStore()), ("sqlite", sqlite)]


def run(store: Any, plan: Plan, choices: list[int]) -> History:
    clock = FakeClock()
    provider = FakeGrantProvider()
    policy = Policy.from_text(POLICY)
    scheduler = Scheduler(choices)
    keys = [GrantKey.of("local", principal, resolve_builtin_role("Reader"), DEV_RG) for principal in PRINCIPALS]
    history = History({key.assignment_name(): key for key in keys})

    def provider_called(name: str, args: tuple[Any, ...]) -> None:
        if name == "delete_assignment":
            key = history.keys.get(args[1])
            grant = store.get_grant(key) if key is not None else None
            held = [_short(h.request_id) for h in grant.active_holds] if grant is not None else []
            history.entries.append(f"provider delete {args[1][:8]} while active holds {held}")
            if held:
                history.violations.append(f"R1: delete of {key} while {held} held it\n{history.tail()}")
        elif name == "create_assignment":
            history.entries.append(f"provider create {args[1][:8]} for {_short(args[2].split(' ')[0])}")

    def store_written(name: str, args: tuple[Any, ...], result: Any) -> None:
        if name == "put_grant":
            deleting = _short(result.deleting.request_id or "reconcile") if result.deleting else None
            active = [_short(h.request_id) for h in result.active_holds]
            history.entries.append(
                f"ledger {result.key.assignment_name()[:8]} v{result.version}: active {active}, deleting {deleting}"
            )

    ports = Paused(store, scheduler, lambda *_: None, store_written)
    backends = Backends(
        requests=ports,
        ledger=ports,
        audit=ports,
        bus=FakeBus(clock),
        providers={"local": Paused(provider, scheduler, provider_called, lambda *_: None)},
        notifier=FakeNotifier(),
        directory=FakeDirectory({name: set(members) for name, members in policy.groups.items()}),
        clock=clock,
        policy=policy,
        sleep=lambda _: waited(history, scheduler),
        delete_lease=timedelta(seconds=3),  # as locally: a waiting writer gives up after a few looks
    )
    lifecycle = Lifecycle(backends)

    # GIVEN approved requests on shared grant keys (decided before anything runs concurrently)
    tasks: list[Callable[[], None]] = []
    for n, (key, twice, revoke) in enumerate(plan.requests):
        principal = PRINCIPALS[key % plan.keys]
        doc = access_request(principal=principal, duration="PT1H", request_id=str(uuid.UUID(int=n + 1, version=4)))
        lifecycle.evaluate(body(doc))
        rid = doc["requestId"]
        tasks += [delivered(lambda rid=rid: lifecycle.grant(rid))] * (2 if twice else 1)
        if revoke == "command":
            tasks.append(delivered(lambda rid=rid: lifecycle.revoke(rid, "done")))
        elif revoke == "requester":
            tasks.append(delivered(lambda rid=rid, who=principal: lifecycle.request_revoke(rid, who, False)))
    if plan.reconcile:
        tasks.append(lambda: lifecycle.reconcile())

    # WHEN they all run at once, interleaved at every store and provider call
    left: list[Callable[[], None]] = []
    scheduler.run([gave_up_into(left, task) for task in tasks])
    # AND what was still being retried is delivered again until it is done (the bus, later)
    for task in left:
        task()
    history.entries.append("settled")
    # THEN (R2) every key's assignment stands exactly on its active holds, and no intent is left
    for key in keys[: plan.keys]:
        grant = store.get_grant(key)
        active = [h.request_id for h in grant.active_holds] if grant is not None else []
        assigned: Assignment | None = provider.get_assignment(key.scope, key.assignment_name())
        if (assigned is not None) != bool(active):
            history.violations.append(f"R2: on {key}, assignment {assigned}, active holds {active}\n{history.tail()}")
        if grant is not None and grant.deleting is not None:
            history.violations.append(f"R2: a deletion intent is left on {key}: {grant.deleting}")
    return history


def _short(request_id: str) -> str:
    """Request n's id is the UUID of integer n + 1: its last digits tell them apart."""
    return f"request {int(request_id[-12:]) - 1}" if request_id[-12:].isdigit() else request_id


def waited(history: History, scheduler: Scheduler) -> None:
    history.entries.append("a writer waits")
    scheduler.pause()


def delivered(handler: Callable[[], object]) -> Callable[[], None]:
    """A message's deliveries: the handler again after a transient fault or a lost race, as the bus does."""

    def deliveries() -> None:
        for _ in range(ATTEMPTS):
            try:
                handler()
                return
            except (TransientError, ConcurrencyConflict):
                continue
        raise TransientError("still not done")

    return deliveries


def gave_up_into(left: list[Callable[[], None]], task: Callable[[], None]) -> Callable[[], None]:
    def attempt() -> None:
        try:
            task()
        except TransientError:
            left.append(task)

    return attempt


# ---------------------------------------------------------------- the property


@settings(
    max_examples=int(os.environ.get("JITGATE_RACE_EXAMPLES", "150")), deadline=None, derandomize=True, database=None
)
@given(plan=PLANS, choices=st.lists(st.integers(0, 55), max_size=200))
def test_no_assignment_is_deleted_under_an_active_hold_nor_left_without_one(plan: Plan, choices: list[int]) -> None:
    with stores() as each:
        for name, store in each:
            history = run(store, plan, choices)
            assert not history.violations, f"{name} store: {history.violations[0]}"
    for seen in ("a writer waits", "provider delete", "provider create"):
        if any(entry.startswith(seen) for entry in history.entries):
            statistic(seen)
    deletes = [e for e in history.entries if e.startswith("provider delete")]
    if len(deletes) > 1:
        statistic("several deletes")
    if any("active [" in e and "," in e.split("active [")[1].split("]")[0] for e in history.entries):
        statistic("two holds on one key at once")


def test_the_scheduler_runs_the_chosen_task_for_its_burst_then_round_robin() -> None:
    # GIVEN two tasks that note where they are between pauses
    scheduler = Scheduler([1, 8])
    seen: list[str] = []

    def task(name: str) -> Callable[[], None]:
        def steps() -> None:
            for step in range(3):
                seen.append(f"{name}{step}")
                scheduler.pause()

        return steps

    # WHEN the choices give b one turn, then a two turns, then round robin
    scheduler.run([task("a"), task("b")])

    # THEN they ran in exactly that order, one at a time
    assert seen == ["b0", "a0", "a1", "b1", "a2", "b2"]
