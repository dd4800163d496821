"""ISO 8601 durations (the subset that means a fixed length of time: days, hours, minutes, seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_RE = re.compile(
    r"^P(?:(?P<weeks>\d{1,4})W)?(?:(?P<days>\d{1,4})D)?"
    r"(?:T(?:(?P<hours>\d{1,5})H)?(?:(?P<minutes>\d{1,6})M)?(?:(?P<seconds>\d{1,7}(?:\.\d{1,6})?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse `PT2H`, `P1DT30M`, `PT5S`... Years and months are refused: they have no fixed length."""
    match = _DURATION_RE.fullmatch(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT2H or PT30M")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return timedelta(
        weeks=parts.get("weeks", 0),
        days=parts.get("days", 0),
        hours=parts.get("hours", 0),
        minutes=parts.get("minutes", 0),
        seconds=parts.get("seconds", 0),
    )


def format_duration(value: timedelta) -> str:
    """The canonical form: `PT2H`, `P1DT4H`, `PT0.5S`."""
    total = value.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = f"{sign}P"
    if days:
        out += f"{int(days)}D"
    time = ""
    if hours:
        time += f"{int(hours)}H"
    if minutes:
        time += f"{int(minutes)}M"
    if seconds or (not days and not time):
        time += f"{seconds:g}S"
    if time:
        out += "T" + time
    return out


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def counted(n: int, noun: str) -> str:
    """`1 approval`, `2 approvals`, `0 approvals`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration_in_words(value: timedelta) -> str:
    """`1 hour 30 minutes`, `2 days 4 hours`, `45 seconds`: every unit that is not zero, to the second."""
    seconds = int(abs(value.total_seconds()))
    if seconds == 0:
        return "less than a second" if value else "0 seconds"
    parts = []
    for unit, size in _UNITS:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(counted(amount, unit))
    text = " ".join(parts)
    return f"minus {text}" if value < timedelta(0) else text
