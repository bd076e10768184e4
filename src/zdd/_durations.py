"""Durations, parsed the way Fly parses them.

A duration is a float number of seconds inside zdd. Text follows Go's
``time.ParseDuration``: a sequence of decimal numbers each with a unit
(``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), as in ``"1m30s"``,
``"500ms"`` or ``"1.5h"``; ``"0"`` alone is allowed. Bare numbers are accepted
only where the caller says what unit Fly gives them (``bare_unit``).
"""

from __future__ import annotations

import math
import re

from ._errors import InvalidConfig, describe

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

#: The longest duration zdd reads: ten years (docs/limits.md).
MAX_DURATION = 10 * 365 * 24 * 3600.0

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_HINT = 'write a Go duration such as "30s", "1m30s" or "500ms"'


def parse_duration(
    value: object,
    *,
    field: str,
    bare_unit: float | None = None,
    allow_negative: bool = False,
) -> float:
    """Parse ``value`` into seconds.

    Args:
        value: a Go duration string, or a number when ``bare_unit`` is given.
        field: the setting's name, used in error messages.
        bare_unit: seconds per unit of a bare number (``1e-3`` where Fly reads
            milliseconds, ``1.0`` where it reads seconds); ``None`` refuses bare
            numbers.
        allow_negative: accept a leading ``-``.

    Raises:
        InvalidConfig: naming ``field`` and the fix.
    """
    if isinstance(value, bool):
        raise InvalidConfig(f"expected a duration, got {describe(value)}; {_HINT}", field=field)
    if isinstance(value, int | float):
        if bare_unit is None:
            raise InvalidConfig(
                f"a bare number ({describe(value)}) has no unit here; {_HINT}", field=field
            )
        try:
            seconds = float(value) * bare_unit
        except OverflowError:
            raise InvalidConfig(f"{describe(value)} is too large; {_HINT}", field=field) from None
    elif isinstance(value, str):
        seconds = _parse_go(value.strip(), field)
    else:
        raise InvalidConfig(
            f"expected a duration, got {type(value).__name__}; {_HINT}", field=field
        )
    if not math.isfinite(seconds):
        raise InvalidConfig(f"{describe(value)} is not a finite duration; {_HINT}", field=field)
    if seconds < 0 and not allow_negative:
        raise InvalidConfig(f"{describe(value)} is negative; durations must be >= 0", field=field)
    if abs(seconds) > MAX_DURATION:
        raise InvalidConfig(
            f"{describe(value)} is longer than the most zdd reads (87600h, ten years)",
            field=field,
        )
    return seconds


def _parse_go(text: str, field: str) -> float:
    if text in ("0", "+0", "-0"):
        return 0.0
    if not text:
        raise InvalidConfig(f"empty duration; {_HINT}", field=field)
    sign = 1.0
    rest = text
    if rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if not rest:
        raise InvalidConfig(f"{describe(text)} is not a duration; {_HINT}", field=field)
    total = 0.0
    pos = 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        if match is None or match.group(1) in ("", "."):
            if rest[pos:].replace(".", "").isdigit():
                raise InvalidConfig(f"{describe(text)} is missing a unit; {_HINT}", field=field)
            raise InvalidConfig(f"{describe(text)} is not a duration; {_HINT}", field=field)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Render seconds compactly, as Go would: ``90.0`` -> ``"1m30s"``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    whole = int(seconds)
    frac = seconds - whole
    hours, rem = divmod(whole, 3600)
    minutes, secs = divmod(rem, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or frac or not out:
        out += f"{secs + frac:g}s"
    return out
