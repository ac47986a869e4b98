"""The smartmeter plugin's own exceptions.

:class:`ParseError` is the only exception the frame and line parsers raise for bad input; the
others are :class:`kansoku.errors.SourceError` subclasses whose message tells the user what to
check, and whose type tells the session worker how to recover.
"""

from __future__ import annotations

from kansoku.errors import SourceError


class ParseError(ValueError):
    """Bytes or a line from the stick or the meter that do not follow the protocol."""


class LinkLost(SourceError):
    """The serial port failed (unplugged stick, I/O error): close it and reopen with backoff."""


class NoAnswer(SourceError):
    """The stick or the meter did not answer in time."""


class SessionDown(SourceError):
    """The PANA session with the meter ended; it must be joined again."""


class AuthRejected(SourceError):
    """The meter refused the Route-B ID or password: retry only slowly."""


class TransmitLimited(SourceError):
    """The module's transmit-time limit (ARIB STD-T108) is active: nothing may be sent."""


class CommandFailed(SourceError):
    """The stick answered ``FAIL ERxx`` to a command."""

    def __init__(self, command: str, code: str) -> None:
        super().__init__(f"the stick answered FAIL {code} to {command}")
        self.command = command
        self.code = code
