"""A clock that moves only when a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now


class TickingClock(FakeClock):
    """A FakeClock that also moves `tick` forward each time it is read, so that work costs time: how much was
    done before something shows in how late it is, without sleeping."""

    def __init__(self, tick: timedelta, start: datetime | None = None) -> None:
        super().__init__(start)
        self.tick = tick

    def now(self) -> datetime:
        self._now += self.tick
        return self._now
