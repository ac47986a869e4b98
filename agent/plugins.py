"""The plugin manager: built-in plugins and the ``kansoku`` entry-point group, one registry.

Built-ins (every subpackage of ``kansoku_plugins``) register through the same hooks as
third-party packages. ``KANSOKU_DISABLE_PLUGINS`` (comma-separated plugin module or entry-point
names) blocks plugins; ``KANSOKU_NO_ENTRYPOINTS=1`` loads only the built-ins.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

import kansoku_plugins
from kansoku import hookspecs
from kansoku.errors import PluginError
from kansoku.types import CommandSpec, SinkSpec, SourceSpec

BUILTIN = "kansoku (built-in)"


@dataclass(frozen=True)
class PluginInfo:
    """One registered spec and where it came from, for ``agent plugins``."""

    kind: str
    name: str
    description: str
    distribution: str
    version: str
    module: str


class Registry:
    """Loads plugins and keeps their specs by kind and name; duplicate names are errors."""

    def __init__(
        self, load_entrypoints: bool = True, extra_plugins: Iterable[tuple[str, object]] = ()
    ) -> None:
        """Load built-ins, entry points (unless disabled) and ``extra_plugins`` (name, plugin):
        plugins handed over directly by a program that embeds the agent, or by a test."""
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._origin: dict[int, tuple[str, str]] = {}
        blocked = {n.strip() for n in os.environ.get("KANSOKU_DISABLE_PLUGINS", "").split(",")}
        self._register_builtins(blocked - {""})
        if load_entrypoints and os.environ.get("KANSOKU_NO_ENTRYPOINTS") != "1":
            self._register_entrypoints(blocked - {""})
        for name, plugin in extra_plugins:
            self._register(plugin, name, "(given directly)", "")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{self._describe(exc.plugin)}: {exc}") from None
        self.sources: dict[str, SourceSpec] = {}
        self.sinks: dict[str, SinkSpec] = {}
        self.commands: dict[tuple[str, ...], CommandSpec] = {}
        self.infos: list[PluginInfo] = []
        self._collect("source", SourceSpec, self.pm.hook.kansoku_register_sources, self.sources)
        self._collect("sink", SinkSpec, self.pm.hook.kansoku_register_sinks, self.sinks)
        self._collect_commands()

    def _register_builtins(self, blocked: set[str]) -> None:
        for module_info in pkgutil.iter_modules(kansoku_plugins.__path__):
            if module_info.name in blocked:
                continue
            module = importlib.import_module(f"kansoku_plugins.{module_info.name}")
            self._register(module, module_info.name, BUILTIN, _own_version())

    def _register_entrypoints(self, blocked: set[str]) -> None:
        for entry in metadata.entry_points(group=hookspecs.PROJECT):
            if entry.name in blocked or self.pm.get_plugin(entry.name) is not None:
                continue
            dist = entry.dist
            dist_name = dist.metadata["Name"] if dist else "unknown distribution"
            version = dist.version if dist else "?"
            try:
                plugin = entry.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {entry.name!r} from {dist_name} {version} failed to import: {exc}"
                ) from exc
            self._register(plugin, entry.name, dist_name, version)

    def _register(self, plugin: ModuleType | Any, name: str, dist: str, version: str) -> None:
        self._origin[id(plugin)] = (dist, version)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} from {dist} {version}: {exc}") from None
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} from {dist} {version}: {exc}") from None

    def _describe(self, plugin: object) -> str:
        dist, version = self._origin.get(id(plugin), ("unknown distribution", "?"))
        return f"plugin {self.pm.get_name(plugin)!r} from {dist} {version}"

    def _collect(
        self, kind: str, expected: type, hook: pluggy.HookCaller, into: dict[str, Any]
    ) -> None:
        owners: dict[str, str] = {}
        for impl in hook.get_hookimpls():
            where = self._describe(impl.plugin)
            for spec in self._results(impl, where, kind, expected):
                if spec.name in into:
                    raise PluginError(
                        f"two plugins register a {kind} named {spec.name!r}: "
                        f"{owners[spec.name]} and {where}; uninstall or disable one "
                        "(KANSOKU_DISABLE_PLUGINS)"
                    )
                into[spec.name] = spec
                owners[spec.name] = where
                dist, version = self._origin.get(id(impl.plugin), ("?", "?"))
                self.infos.append(
                    PluginInfo(kind, spec.name, spec.description, dist, version, impl.plugin_name)
                )

    @staticmethod
    def _results(impl: pluggy.HookImpl, where: str, kind: str, expected: type) -> list[Any]:
        try:
            specs = list(impl.function() or ())
        except Exception as exc:
            raise PluginError(f"{where} failed to register its {kind}s: {exc}") from exc
        for spec in specs:
            if not isinstance(spec, expected):
                raise PluginError(
                    f"{where} returned {type(spec).__name__} from {impl.function.__name__}, "
                    f"expected {expected.__name__}"
                )
        return specs

    def _collect_commands(self) -> None:
        for impl in self.pm.hook.kansoku_register_commands.get_hookimpls():
            where = self._describe(impl.plugin)
            for spec in self._results(impl, where, "command", CommandSpec):
                if spec.path in self.commands:
                    raise PluginError(
                        f"two plugins register the command 'agent {' '.join(spec.path)}'; "
                        f"the second is {where}"
                    )
                self.commands[spec.path] = spec

    def source(self, name: str) -> SourceSpec:
        """The source spec called ``name``."""
        return self.sources[name]

    def sink(self, name: str) -> SinkSpec:
        """The sink spec called ``name``."""
        return self.sinks[name]


def _own_version() -> str:
    from kansoku import __version__

    return __version__
