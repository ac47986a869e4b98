"""kansoku: one monitoring agent that reads devices and services and delivers typed metrics.

Plugin authors import what they need from here::

    from kansoku import hookimpl, SourceSpec, SinkSpec, Metric, FieldSpec
"""

from kansoku.hookspecs import hookimpl
from kansoku.metric import Metric
from kansoku.schema import FieldSpec, MeasurementSchema
from kansoku.types import CommandSpec, Option, PluginContext, SinkSpec, SourceSpec

__version__ = "0.1.0"

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
