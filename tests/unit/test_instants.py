"""Instants are written and read by the fast paths of `format_instant` and `parse_instant` (issue #10, CPU per
lifecycle) exactly as strftime and strptime wrote and read them: the text is hashed into every audit event,
and stored instants are compared as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.store_format import INSTANT_FORMAT, parse_instant
from shared.domain.audit import format_instant

offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC) | offsets
)


@given(instants)
def test_format_instant_writes_what_strftime_wrote(value: datetime) -> None:
    assert format_instant(value) == value.astimezone(UTC).strftime(INSTANT_FORMAT)


@given(instants.filter(lambda v: v.astimezone(UTC).year >= 1000))
def test_parse_instant_reads_what_strptime_read(value: datetime) -> None:
    text = format_instant(value)
    assert parse_instant(text) == datetime.strptime(text, INSTANT_FORMAT).replace(tzinfo=UTC) == value
    assert parse_instant(text).tzinfo is UTC


@pytest.mark.parametrize("text", [
    "2026-12-06 08:00:00.123456Z",  # a space for the T
    "2026-12-06T08:00:00,123456Z",  # a comma for the point
    "2026-12-06T08:00:00.123456+",  # no Z
    "20261206T080000.123456Z",
    "",
])
def test_parse_instant_refuses_what_strptime_refused(text: str) -> None:
    with pytest.raises(ValueError):
        datetime.strptime(text, INSTANT_FORMAT)
    with pytest.raises(ValueError):
        parse_instant(text)


def test_an_instant_written_again_in_any_zone_is_the_text_written_first_and_a_naive_one_is_not_remembered() -> None:
    from shared.domain import audit

    at = datetime(2026, 12, 6, 12, 0, 0, 654321, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    before = audit._formatted.cache_info()
    texts = [format_instant(at), format_instant(at.astimezone(UTC)), format_instant(at)]
    after = audit._formatted.cache_info()
    assert texts == ["2026-12-06T06:30:00.654321Z"] * 3
    assert (after.hits - before.hits, after.misses - before.misses) in ((2, 1), (3, 0))
    format_instant(datetime(2026, 12, 6, 12, 0))
    assert audit._formatted.cache_info().currsize == after.currsize
