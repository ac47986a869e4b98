"""Exceptions that carry a sentence for the user instead of a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class KansokuError(Exception):
    """Base class: the message is meant for the user as it is."""


class ConfigError(KansokuError):
    """A configuration file is wrong; the message names the file, section and key."""


class PluginError(KansokuError):
    """A plugin could not be loaded or registered; the message names its distribution."""


class SourceError(KansokuError):
    """A source could not collect; the message says what to check."""


class DeliveryError(KansokuError):
    """A sink could not deliver a batch. Subclasses say what the spool should do."""


class RetryLater(DeliveryError):
    """The sink is unreachable or busy (network error, timeout, 5xx): keep the batch, back off."""


class Rejected(DeliveryError):
    """The sink refused some points for good (HTTP 400, type conflict, parse error).

    ``indexes`` names the refused points of the batch (all of them when ``None``); they go to
    the quarantine with this message, or with their own message from ``reasons`` (batch index
    -> the server's words for that point), and the rest of the batch counts as delivered.
    """

    def __init__(
        self,
        message: str,
        indexes: Sequence[int] | None = None,
        reasons: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})
        if indexes is None and reasons:
            indexes = sorted(self.reasons)
        self.indexes = None if indexes is None else list(indexes)
