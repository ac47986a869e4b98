"""kansoku: one monitoring agent that reads devices and services and delivers typed metrics.

Plugin authors import what they need from here::

    from kansoku import hookimpl, SourceSpec, SinkSpec, Metric, FieldSpec

The names load on first use, so that ``agent get`` and ``agent cacti``, which need none of
them, do not pay for pluggy and the rest at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "hookimpl": "kansoku.hookspecs",
    "Metric": "kansoku.metric",
    "FieldSpec": "kansoku.schema",
    "MeasurementSchema": "kansoku.schema",
    "CommandSpec": "kansoku.types",
    "Option": "kansoku.types",
    "PluginContext": "kansoku.types",
    "SinkSpec": "kansoku.types",
    "SourceSpec": "kansoku.types",
}

if TYPE_CHECKING:
    from kansoku.hookspecs import hookimpl
    from kansoku.metric import Metric
    from kansoku.schema import FieldSpec, MeasurementSchema
    from kansoku.types import CommandSpec, Option, PluginContext, SinkSpec, SourceSpec

__all__ = [
    "CommandSpec",
    "FieldSpec",
    "MeasurementSchema",
    "Metric",
    "Option",
    "PluginContext",
    "SinkSpec",
    "SourceSpec",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kansoku' has no attribute {name!r}")
