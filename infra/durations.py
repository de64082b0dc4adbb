"""Durations in the form the docker provider stores them: Go's `time.Duration.String()`.

The provider parses a health check's `interval` with `time.ParseDuration` and reads it back from
the engine with `Duration.String()`, so "120s" comes back as "2m0s": a declared value in any
other form shows as a change on every `pulumi preview`. Declare durations with `go_duration`.
"""

from __future__ import annotations

import re

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Nanoseconds in a Go duration string ("2m0s", "500ms", "1h30m"); ValueError otherwise."""
    if text == "0":
        return 0
    pos, total = 0, 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise ValueError(f"not a Go duration: {text!r} (e.g. 5s, 2m0s, 500ms)")
        total += round(float(match.group(1)) * _UNITS_NS[match.group(2)])
        pos = match.end()
    if not text:
        raise ValueError("not a Go duration: empty string")
    return total


def _fraction(value: int, digits: int) -> str:
    """`value` scaled down by 10**digits, without trailing zeros ("1.5", "2")."""
    whole, frac = divmod(value, 10**digits)
    text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def go_duration_string(nanoseconds: int) -> str:
    """What Go's `time.Duration(n).String()` prints, for n >= 0."""
    if nanoseconds < 0:
        raise ValueError("negative durations are not used here")
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 10**3:
        return f"{nanoseconds}ns"
    if nanoseconds < 10**6:
        return f"{_fraction(nanoseconds, 3)}µs"
    if nanoseconds < 10**9:
        return f"{_fraction(nanoseconds, 6)}ms"
    hours, rest = divmod(nanoseconds, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = f"{_fraction(rest, 9)}s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def go_duration(seconds: float) -> str:
    """A duration of `seconds`, written as the provider reads it back."""
    return go_duration_string(round(seconds * 10**9))


def is_canonical(text: str) -> bool:
    try:
        return go_duration_string(parse_go_duration(text)) == text
    except ValueError:
        return False
