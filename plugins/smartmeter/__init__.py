"""The ``smartmeter`` plugin: a B-route smart meter through a Wi-SUN stick, and its emulator.

Only hook implementations live here; the source, the serial code and the emulator are
imported when they are used, so loading the plugin stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kansoku import CommandSpec, PluginContext, SourceSpec, hookimpl
from kansoku_plugins.smartmeter import command
from kansoku_plugins.smartmeter.spec import OPTIONS, SCHEMA


def _factory(options: Mapping[str, Any], context: PluginContext) -> Any:
    from kansoku_plugins.smartmeter.source import SmartmeterSource

    return SmartmeterSource(options, context)


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """The smartmeter source."""
    return [
        SourceSpec(
            name="smartmeter",
            factory=_factory,
            description="B-route smart meter via a Wi-SUN stick (SKSTACK-IP, ECHONET Lite)",
            options=OPTIONS,
            default_interval=60.0,
            schema=SCHEMA,
        )
    ]


@hookimpl
def kansoku_register_commands() -> Iterable[CommandSpec]:
    """``agent emulate smartmeter``."""
    return [
        CommandSpec(
            path=("emulate", "smartmeter"),
            help="emulate a Wi-SUN stick and a smart meter on a pseudo-terminal",
            configure=command.configure,
            run=command.run,
        )
    ]
