"""The ``switchbot`` plugin: SwitchBot thermo-hygrometers heard over BLE advertisements (bleak).

Only hook implementations live here, with light imports: the plugin manager imports every
plugin package, and ``agent get`` must start fast. bleak is imported by the scanner only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kansoku import CommandSpec, PluginContext, SourceSpec, hookimpl


def _source(options: Mapping[str, Any], context: PluginContext) -> Any:
    from kansoku_plugins.switchbot.source import SwitchBotSource

    return SwitchBotSource(options, context)


@hookimpl
def kansoku_register_sources() -> Iterable[SourceSpec]:
    """The switchbot source."""
    from kansoku_plugins.switchbot.config import OPTIONS, SCHEMA

    return [
        SourceSpec(
            name="switchbot",
            factory=_source,
            description="SwitchBot Meter/Plus/Outdoor/Pro/CO2/Hub 2 over BLE, with reception stats",
            options=OPTIONS,
            default_interval=60.0,
            mode="listen",
            schema=SCHEMA,
        )
    ]


@hookimpl
def kansoku_register_commands() -> Iterable[CommandSpec]:
    """``agent switchbot scan`` and ``agent switchbot record``."""
    from kansoku_plugins.switchbot.cli import COMMANDS

    return COMMANDS
