"""The plugin API: the hooks a kansoku plugin may implement (pluggy marker ``kansoku``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from kansoku.runtime import Agent
    from kansoku.types import CommandSpec, SinkSpec, SourceSpec

PROJECT = "kansoku"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """Return the source plugins this package provides."""


@hookspec
def kansoku_register_sinks() -> Iterable[SinkSpec]:
    """Return the sink plugins this package provides."""


@hookspec
def kansoku_register_commands() -> Iterable[CommandSpec]:
    """Return extra ``agent`` subcommands this package provides."""


@hookspec
def kansoku_startup(agent: Agent) -> None:
    """Called once the agent has built its sources and sinks, before the first collection."""


@hookspec
def kansoku_shutdown(agent: Agent) -> None:
    """Called when the agent stops, after the final flush."""
