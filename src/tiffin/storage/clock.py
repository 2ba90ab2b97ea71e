"""The one clock: every "now" in the project comes from here."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC, without a zone: what the DateTime columns store."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso_now() -> str:
    """Now in UTC as ISO text to the microsecond (the text columns' and the history's timestamps)."""
    return utcnow().isoformat(timespec="microseconds")
