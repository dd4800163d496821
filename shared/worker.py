"""Consumes the embedded bus the way the Functions host consumes Service Bus: one message at a time
under a peek-lock, settled by outcome. Also runs the reconcile timer.

Due revokes come before anything else, three times over: every consumer takes the revocations queue first,
one more consumer serves nothing but that queue, so that neither a backlog of grants nor a grant held up
in provider backoff can stand between a due revoke and its handler (docs/architecture.md §3), and while a
consumer serves that queue its writes go before those of the process's other threads (`shared.priority`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from .domain.errors import ConcurrencyConflict, InvalidRequest, LockLost, NotFound, TransientError
from .lifecycle import Lifecycle, ReconcileReport
from .ports import Bus, ReceivedMessage, Settlement, SettlesTogether
from .priority import revoking
from .settings import Settings

log = logging.getLogger("jitgate.worker")


def on_access_request(lifecycle: Lifecycle, body: bytes) -> None:
    """`access-requests` trigger body. Invalid input is handled (rejected + audited) inside."""
    lifecycle.evaluate(body)


def on_lifecycle_command(
    lifecycle: Lifecycle, body: bytes, delivery_count: int, max_delivery_count: int
) -> None:
    """`access-lifecycle` and `access-revocations` trigger body. On the last delivery a grant fails visibly
    instead of retrying."""
    lifecycle.handle_command(body, final_attempt=delivery_count >= max_delivery_count)


def on_reconcile(lifecycle: Lifecycle) -> ReconcileReport:
    """The reconcile timer's body: flush audit outboxes left by crashed handlers, then reconcile."""
    flushed = lifecycle.flush_pending()
    report = lifecycle.reconcile()
    report.flushed = flushed
    if report.errors:
        # Per-request failures are retried by the next pass; they must still be seen.
        log.warning("reconcile: %s", report.as_dict())
    elif any((report.revoked, report.orphans_removed, report.expired, report.regranted, flushed)):
        log.info("reconcile: %s", report.as_dict())
    return report


class Worker:
    """Drains the three queues, due revokes first, and fires reconcile on its interval until `stop` is set.
    It serves the revocations queue of the lifecycle it drives, where that lifecycle puts its revokes."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        bus: Bus,
        requests_queue: str,
        lifecycle_queue: str,
        max_delivery_count: int,
        reconcile_every: float,
        poll_interval: float = 0.05,
        settle_within: float = 1.0,
    ) -> None:
        self.lifecycle = lifecycle
        self.bus = bus
        self.requests_queue = requests_queue
        self.lifecycle_queue = lifecycle_queue
        self.revocations_queue = lifecycle.b.revocations_queue
        self.max_delivery_count = max_delivery_count
        self.reconcile_every = reconcile_every
        self.poll_interval = poll_interval
        self.settle_within = settle_within
        self.stop = threading.Event()

    def handle(self, message: ReceivedMessage) -> None:
        """Run the handler and settle the message by outcome."""
        self._handle_batch([message])

    def run(self, message: ReceivedMessage) -> Settlement | None:
        """Run the handler; say how the message is to be settled (None: not at all, its lock runs out)."""
        try:
            if message.queue == self.requests_queue:
                on_access_request(self.lifecycle, message.body)
            else:
                on_lifecycle_command(
                    self.lifecycle, message.body, message.delivery_count, self.max_delivery_count
                )
        except InvalidRequest as exc:
            return Settlement(message, "dead_letter", "InvalidCommand", str(exc.__cause__ or exc))
        except NotFound as exc:
            # A command for a request this store never saw cannot succeed by retrying.
            return Settlement(message, "dead_letter", "UnknownRequest", str(exc))
        except ConcurrencyConflict:
            return Settlement(message, "abandon")
        except TransientError as exc:
            # NB. No abandon: the lock expiring is the bus-level backoff (handlers already retried).
            log.warning(
                "transient failure on %s (delivery %d): %s", message.message_id, message.delivery_count, exc
            )
            return None
        except Exception:
            log.exception("handler failed on %s (delivery %d)", message.message_id, message.delivery_count)
            return Settlement(message, "abandon")
        return Settlement(message, "complete")

    def _handle_batch(self, batch: list[ReceivedMessage]) -> None:
        """Run each message's handler in turn, settling each message only once its handler has finished. A bus
        that settles several in one round trip (`SettlesTogether`) gets the batch's settlements together, at its
        end or before the next handler once the first of them has waited `settle_within` seconds; any other bus
        gets each before the next handler runs, as `handle` would settle it."""
        together = self.bus if isinstance(self.bus, SettlesTogether) else None
        within = self.settle_within if together is not None else 0.0
        waiting: list[Settlement] = []
        since = 0.0
        try:
            for message in batch:
                if waiting and time.monotonic() - since >= within:
                    settling, waiting = waiting, []
                    self._settle(settling, together)
                settlement = self.run(message)
                if settlement is not None:
                    if not waiting:
                        since = time.monotonic()
                    waiting.append(settlement)
        finally:
            # NB. Also when the thread is being stopped: what finished is settled, as before.
            self._settle(waiting, together)

    def _settle(self, settlements: list[Settlement], together: SettlesTogether | None) -> None:
        """All in one round trip through `together` (the bus, where it can), else one by one. A lost lock is only
        logged: the message comes again, and its handler is idempotent."""
        lost: list[LockLost] = []
        if together is not None:
            lost = [exc for _, exc in together.settle(settlements)] if settlements else []
        else:
            for settlement in settlements:
                try:
                    settlement.apply(self.bus)
                except LockLost as exc:
                    lost.append(exc)
        for error in lost:
            log.warning("lock lost before settling; the message will be delivered again: %s", error)

    def drain(self, limit: int = 1000) -> int:
        """Handle every message due now (up to `limit`), every due revoke before each batch of other work;
        returns how many were handled."""
        handled = 0
        while handled < limit:
            handled += self.drain_revocations(limit - handled)
            if handled >= limit:
                break
            batch = self.bus.receive(self.lifecycle_queue, 16) + self.bus.receive(self.requests_queue, 16)
            if not batch:
                break
            self._handle_batch(batch)
            handled += len(batch)
        return handled

    def drain_revocations(self, limit: int = 1000) -> int:
        """Handle every revoke due now (up to `limit`); returns how many were handled. Its writes go before
        those of the process's other threads (`shared.priority`)."""
        handled = 0
        with revoking():
            while handled < limit:
                batch = self.bus.receive(self.revocations_queue, min(16, limit - handled))
                if not batch:
                    break
                self._handle_batch(batch)
                handled += len(batch)
        return handled

    def reconcile(self) -> None:
        try:
            on_reconcile(self.lifecycle)
        except Exception:
            log.exception("reconcile failed; it runs again on the next tick")

    def run_consumer(self) -> None:
        self._consume(self.drain)

    def run_revocations(self) -> None:
        """The consumer that serves only the revocations queue."""
        self._consume(self.drain_revocations)

    def _consume(self, drain: Callable[[int], int]) -> None:
        while not self.stop.is_set():
            try:
                if not drain(64):
                    self.stop.wait(self.poll_interval)
            except Exception:
                log.exception("consumer loop error")
                self.stop.wait(1.0)

    def run_timer(self) -> None:
        while not self.stop.wait(self.reconcile_every):
            self.reconcile()

    def start(self, consumers: int = 2, timer: bool = True, revocations: bool | None = None) -> list[threading.Thread]:
        """`consumers` threads on every queue; one on the revocations queue alone (by default when there are
        consumers); the timer."""
        threads = [
            threading.Thread(target=self.run_consumer, name=f"jitgate-consumer-{i}", daemon=True)
            for i in range(consumers)
        ]
        if consumers > 0 if revocations is None else revocations:
            threads.append(threading.Thread(target=self.run_revocations, name="jitgate-revocations", daemon=True))
        if timer:
            threads.append(threading.Thread(target=self.run_timer, name="jitgate-reconcile", daemon=True))
        for thread in threads:
            thread.start()
        return threads


def consumer_process(settings: Settings, log_level: str) -> BaseProcess:
    """Start a process that serves the bus as `jitgate serve`'s consumer threads do (no timer, no API, no consumer
    of the revocations queue alone: the serving process runs that one). It stops when the process that started it
    is gone, however that ended."""
    context = multiprocessing.get_context("spawn")  # NB. not fork: the server already runs threads
    process = context.Process(target=_consume_until_orphaned, args=(settings, os.getpid(), log_level),
                              name="jitgate-consumers", daemon=True)
    process.start()
    return process


def _consume_until_orphaned(settings: Settings, parent: int, log_level: str) -> None:
    from .runtime import build

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = build(settings)
    worker = Worker(runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
                    settings.max_delivery_count, settings.reconcile_interval.total_seconds(), settings.poll_interval)
    # NB. The revocations consumer of its own runs in the serving process: here it would take the interpreter from
    # this process's consumer at every SQLite call while holding the file's write turn (architecture §8).
    worker.start(settings.workers, timer=False, revocations=False)
    # NB. A server killed outright (SIGKILL) cannot stop its children: each watches for being handed to another
    # parent, and stops within half a second. What it was handling is settled or redelivered, as after any crash.
    while os.getppid() == parent:
        time.sleep(0.5)
    worker.stop.set()
