"""The bounded map a process keeps of its recent work (records written, bodies parsed, events made, hold rows)."""

from __future__ import annotations

import pytest

from shared.domain.recent import Recent


def test_the_oldest_entry_goes_when_there_are_too_many_and_putting_one_again_makes_it_the_newest() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 3)  # now the newest
    recent.put("c", 4)
    assert (recent.get("a"), recent.get("b"), recent.get("c"), len(recent)) == (3, None, 4, 2)


def test_an_entry_popped_is_forgotten() -> None:
    recent: Recent[str, int] = Recent(4)
    recent.put("a", 1)
    assert recent.pop("a") == 1
    assert recent.pop("a") is None and recent.get("a") is None


def test_a_map_that_could_hold_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Recent(0)
