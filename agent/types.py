"""What plugins hand to the core: typed specs for sources, sinks, options and commands.

A plugin's hook returns these (conda's ``plugins/types.py`` idea); the core knows no plugin
by name. Factories are called with the parsed options of one config section and a
:class:`PluginContext`; heavy imports belong inside the factory, not at module level, so that
``agent get`` and ``agent cacti`` stay fast.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from kansoku.metric import Metric
from kansoku.schema import Schema

REQUIRED: Any = object()


@dataclass(frozen=True)
class Option:
    """One key a plugin accepts in its config section.

    ``parse`` turns the text into a value (see :mod:`kansoku.options`); ``secret`` keys are
    parsed to :class:`kansoku.options.Secret` and never printed; ``default`` is already typed.
    """

    name: str
    parse: Callable[[str], Any] = str
    default: Any = REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        """Whether the section must set this key."""
        return self.default is REQUIRED


@dataclass
class PluginContext:
    """What the core gives a plugin instance: its name, its own state folder and its logger."""

    name: str
    state_dir: Path
    log: logging.Logger
    agent_state_dir: Path


class Source(Protocol):
    """A configured source instance.

    ``collect`` returns the metrics seen since the last call (raw values are fine; the core
    coerces them against ``schema``). Listening sources also have ``start`` (begin listening
    in the background) and the core calls ``close`` when it stops. A source whose input must be
    confirmed (a redis stream consumer group) may have ``acknowledge()``: the core calls it once
    the points of the last ``collect`` are on disk in every sink's spool.
    """

    schema: Schema

    def collect(self) -> Iterable[Metric]: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """A configured sink instance: ``write`` delivers a batch or raises a DeliveryError.

    A sink that needs to know the sources (their intervals and schemas, e.g. to tell stale
    values or COUNTER from GAUGE) may have ``describe_sources(sources: Sequence[SourceInfo],
    flush_interval: float)``; the core calls it at start and after every reload. A sink may
    also have ``prepare(metric) -> bytes | None``: its wire form of a point, computed when the
    point is spooled, stored beside it and handed back as ``batch.prepared`` (it must not
    depend on options that can change between runs).
    """

    def write(self, batch: Sequence[Metric]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceInfo:
    """What a sink may learn about a configured source instance (see ``describe_sources``)."""

    name: str
    interval: float
    schema: Schema


@dataclass(frozen=True)
class SourceSpec:
    """A source plugin: how to build it and what its config section may say.

    ``mode`` is ``"poll"`` (``collect`` asks the device) or ``"listen"`` (the source hears
    events continuously after ``start`` and ``collect`` hands over what it heard).
    ``schema`` documents the fields for ``agent plugins``; instances carry their own.
    """

    name: str
    factory: Callable[[Mapping[str, Any], PluginContext], Source]
    description: str = ""
    options: Sequence[Option] = ()
    default_interval: float = 60.0
    mode: Literal["poll", "listen"] = "poll"
    schema: Schema = field(default_factory=dict)


@dataclass(frozen=True)
class SinkSpec:
    """A sink plugin: how to build it, what its config section may say, what it accepts.

    ``accepts`` lists the field types the sink can store; the core converts nothing for it,
    it only refuses to configure a sink behind a source whose types it cannot take.
    """

    name: str
    factory: Callable[[Mapping[str, Any], PluginContext], Sink]
    description: str = ""
    options: Sequence[Option] = ()
    accepts: frozenset[type] = frozenset({int, float, bool, str})
    default_batch_size: int = 1000


@dataclass(frozen=True)
class CommandSpec:
    """An ``agent`` subcommand from a plugin, e.g. ``("emulate", "smartmeter")``.

    ``configure`` adds arguments to the subparser; ``run`` gets the parsed arguments and
    returns the exit status.
    """

    path: tuple[str, ...]
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
