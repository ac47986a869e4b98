"""etc/agent.ini -> typed settings, with errors that name the file, section and key.

Sections are ``[agent]``, ``[source.PLUGIN]`` / ``[source.PLUGIN.INSTANCE]`` and
``[sink.PLUGIN]`` / ``[sink.PLUGIN.INSTANCE]``. ``${NAME}`` (or ``${NAME:-default}``) in a value
is replaced by that environment variable, so secrets can stay out of the file.

:func:`read_agent_settings` reads only ``[agent]`` and imports nothing heavy: ``agent get`` and
``agent cacti`` use it. :func:`load` validates every section against the plugins' option lists.
"""

from __future__ import annotations

import ast
import configparser
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kansoku import options as opt
from kansoku.errors import ConfigError
from kansoku.types import Option

if TYPE_CHECKING:
    from kansoku.plugins import Registry

log = logging.getLogger("kansoku.config")

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"[A-Za-z0-9_-]+")

AGENT_OPTIONS = (
    Option("state_dir", Path, None, "where spools, pinned field types and caches live"),
    Option("log_level", opt.choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("tags", opt.tag_map, {}, "tags added to every metric, e.g. host=pi"),
    Option("self_metrics", opt.boolean, True, "report the agent's own metrics (measurement agent)"),
    Option(
        "self_metrics_interval",
        opt.positive_duration,
        60.0,
        "how often the agent reports on itself",
    ),
    Option("shutdown_timeout", opt.duration, 10.0, "how long the final flush may take"),
    Option("health_listen", opt.host_port, None, "HOST:PORT of the health endpoint (off)"),
    Option("health_staleness", opt.number, 3.0, "intervals without success before unhealthy"),
)
SOURCE_OPTIONS = (
    Option("enabled", opt.boolean, True, "set to false to keep the section but not run it"),
    Option("interval", opt.positive_duration, None, "how often to collect (default: plugin's)"),
    Option("jitter", opt.duration, 0.0, "random delay up to this before each collection"),
    Option(
        "timeout",
        opt.positive_duration,
        None,
        "give up on a collection after this (default: interval)",
    ),
    Option(
        "window", opt.positive_duration, None, "listening sources: how long `agent once` listens"
    ),
    Option("tags", opt.tag_map, {}, "tags added to this source's metrics"),
)
SINK_OPTIONS = (
    Option("enabled", opt.boolean, True, "set to false to keep the section but not run it"),
    Option("batch_size", opt.integer, None, "points per write (default: the plugin's)"),
    Option(
        "flush_interval", opt.positive_duration, 10.0, "longest time a point waits in the spool"
    ),
    Option("max_spool_size", opt.size, 256 * 1024**2, "spool bound; the oldest points go first"),
    Option("max_spool_age", opt.duration, 7 * 86400.0, "points older than this are dropped"),
    Option("retry_max_backoff", opt.duration, 300.0, "longest pause between retries"),
    Option("include", opt.text_list, [], "only these measurements (glob patterns)"),
    Option("exclude", opt.text_list, [], "never these measurements (glob patterns)"),
)


@dataclass
class AgentSettings:
    """The ``[agent]`` section."""

    state_dir: Path
    log_level: str = "info"
    tags: dict[str, str] = field(default_factory=dict)
    self_metrics: bool = True
    self_metrics_interval: float = 60.0
    shutdown_timeout: float = 10.0
    health_listen: tuple[str, int] | None = None
    health_staleness: float = 3.0


@dataclass
class SectionConfig:
    """One ``[source.…]`` or ``[sink.…]`` section: common keys, plugin options, origin."""

    kind: str
    id: str
    plugin: str
    instance: str | None
    common: dict[str, Any]
    options: dict[str, Any]

    @property
    def section(self) -> str:
        """The section header as written."""
        return f"{self.kind}.{self.id}"


@dataclass
class Config:
    """A whole validated configuration file."""

    path: Path
    agent: AgentSettings
    sources: list[SectionConfig]
    sinks: list[SectionConfig]


def default_state_dir() -> Path:
    """/var/lib/kansoku for root; $XDG_STATE_HOME/kansoku (~/.local/state/kansoku) otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/kansoku")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kansoku"


def read_ini(path: Path) -> configparser.ConfigParser:
    """Parse the INI file; syntax errors become a ConfigError naming file and line."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {_parser_message(exc)}") from None
    return parser


def _parser_message(exc: configparser.Error) -> str:
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] appears twice"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: [{exc.section}] sets {exc.option!r} twice"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before the first [section]: {exc.line.strip()!r}"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(f"line {n}: {_unrepr(text).strip()!r}" for n, text in exc.errors)
        return f"cannot parse {lines} (expected key = value)"
    return str(exc).splitlines()[0]


def _unrepr(text: str) -> str:
    """configparser reports bad lines as their repr; give back the line itself."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


def _substitute(path: Path, section: str, key: str, raw: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ConfigError(f"{path}: [{section}] {key}: environment variable {name} is not set")
        return value

    return _ENV.sub(replace, raw)


def _parse_section(
    path: Path,
    section: str,
    raw: Mapping[str, str],
    allowed: Sequence[Option],
    also_known: Sequence[Option] = (),
) -> dict[str, Any]:
    by_name = {o.name: o for o in allowed}
    for key in raw:
        if key not in by_name:
            known = ", ".join(sorted({o.name for o in (*allowed, *also_known)})) or "none"
            raise ConfigError(f"{path}: [{section}] unknown key {key!r} (known keys: {known})")
    values: dict[str, Any] = {}
    for option in allowed:
        if option.name not in raw:
            if option.required:
                raise ConfigError(f"{path}: [{section}] {option.name} is required ({option.help})")
            values[option.name] = option.default
            continue
        text = _substitute(path, section, option.name, raw[option.name])
        try:
            values[option.name] = option.parse(text)
        except ValueError as exc:
            shown = "" if option.parse is opt.secret else f" {text!r}:"
            raise ConfigError(f"{path}: [{section}] {option.name}:{shown} {exc}") from None
    return values


def _settings(path: Path, raw: Mapping[str, str]) -> AgentSettings:
    values = _parse_section(path, "agent", raw, AGENT_OPTIONS)
    values["state_dir"] = values["state_dir"] or default_state_dir()
    return AgentSettings(**values)


def read_agent_settings(path: Path) -> AgentSettings:
    """Only the ``[agent]`` section (for the light commands)."""
    parser = read_ini(path)
    raw = dict(parser["agent"]) if parser.has_section("agent") else {}
    return _settings(path, raw)


def load(path: Path, registry: Registry) -> Config:
    """Read and validate a whole configuration file against the registered plugins."""
    path = Path(path)
    parser = read_ini(path)
    agent = _settings(path, dict(parser["agent"]) if parser.has_section("agent") else {})
    sources: list[SectionConfig] = []
    sinks: list[SectionConfig] = []
    holds_secret = False
    for section in parser.sections():
        if section == "agent":
            continue
        kind, _, ident = section.partition(".")
        if kind not in ("source", "sink") or not ident:
            raise ConfigError(
                f"{path}: unknown section [{section}] "
                "(expected [agent], [source.PLUGIN[.INSTANCE]] or [sink.PLUGIN[.INSTANCE]])"
            )
        plugin, _, instance = ident.partition(".")
        if not _NAME.fullmatch(plugin) or (instance and not _NAME.fullmatch(instance)):
            raise ConfigError(
                f"{path}: [{section}] names may use letters, digits, '_' and '-' only"
            )
        specs = registry.sources if kind == "source" else registry.sinks
        if plugin not in specs:
            known = ", ".join(sorted(specs)) or "none installed"
            raise ConfigError(
                f"{path}: [{section}] no {kind} plugin named {plugin!r} (available: {known})"
            )
        spec = specs[plugin]
        common_opts = SOURCE_OPTIONS if kind == "source" else SINK_OPTIONS
        raw = dict(parser[section])
        common_raw = {k: v for k, v in raw.items() if k in {o.name for o in common_opts}}
        own_raw = {k: v for k, v in raw.items() if k not in common_raw}
        common = _parse_section(path, section, common_raw, common_opts)
        own = _parse_section(path, section, own_raw, spec.options, common_opts)
        holds_secret |= any(
            o.parse is opt.secret and o.name in own_raw and not _ENV.fullmatch(own_raw[o.name])
            for o in spec.options
        )
        entry = SectionConfig(kind, ident, plugin, instance or None, common, own)
        if not common["enabled"]:
            continue
        (sources if kind == "source" else sinks).append(entry)
    if holds_secret:
        _warn_if_readable(path)
    return Config(path, agent, sources, sinks)


def _warn_if_readable(path: Path) -> None:
    info = path.stat()
    others = info.st_mode & stat.S_IROTH
    foreign_group = info.st_mode & stat.S_IRGRP and info.st_gid != os.getegid()
    if others or foreign_group:
        log.warning(
            "%s holds secrets and can be read by other users; run: chmod 600 %s", path, path
        )
