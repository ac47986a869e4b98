"""The ``agent`` command line: run, once, check, plugins, spool, and commands from plugins.

Commands that Cacti or Zabbix call on every poll must start fast, so this module imports only
the standard library at the top; the plugin manager, the scheduler and the plugins load only
for the commands that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from kansoku import __version__
from kansoku.cachecli import add_commands as add_cache_commands
from kansoku.errors import KansokuError

if TYPE_CHECKING:
    from kansoku.config import Config
    from kansoku.plugins import Registry

DEFAULT_CONFIG = Path("/etc/kansoku/agent.ini")
CORE_COMMANDS = ("run", "once", "check", "plugins", "spool", "status", "cacti", "get", "discover")
OPTIONS_WITH_VALUE = ("-c", "--config", "--log-level")
log = logging.getLogger("kansoku")


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("KANSOKU_CONFIG") or DEFAULT_CONFIG)


def setup_logging(level: str) -> None:
    """Log to stderr with time, level and logger name."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(
    args: argparse.Namespace, demo_dir: Path | None = None, registry: Registry | None = None
) -> tuple[Config, Registry]:
    from kansoku import config as config_module
    from kansoku.plugins import Registry

    registry = registry or Registry()
    if getattr(args, "demo", False):
        with resources.as_file(resources.files("kansoku") / "demo.ini") as demo_ini:
            cfg = config_module.load(demo_ini, registry)
        assert demo_dir is not None
        cfg.agent.state_dir = demo_dir
    else:
        cfg = config_module.load(_config_path(args), registry)
    return cfg, registry


def _configure_logging(args: argparse.Namespace, configured: str) -> None:
    logging.getLogger().setLevel(getattr(logging, (args.log_level or configured).upper()))


def cmd_run(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT."""
    from kansoku.runtime import Agent

    with tempfile.TemporaryDirectory(prefix="kansoku-demo-") as demo_dir:
        cfg, registry = _load(args, Path(demo_dir))
        _configure_logging(args, cfg.agent.log_level)
        agent = Agent(cfg, registry)
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                agent.reload_requested.set()
            else:
                stop.set()

        def reload_config() -> Config:
            return _load(args, Path(demo_dir), registry)[0]

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        agent.run(stop, reload=reload_config)
    return 0


def cmd_once(args: argparse.Namespace) -> int:
    """Collect every source once, deliver, exit 0 only if all of it worked."""
    from kansoku.runtime import Agent

    with tempfile.TemporaryDirectory(prefix="kansoku-demo-") as demo_dir:
        cfg, registry = _load(args, Path(demo_dir))
        _configure_logging(args, cfg.agent.log_level)
        failures = Agent(cfg, registry).once()
    for line in failures:
        print(f"agent once: {line}", file=sys.stderr)
    return 1 if failures else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and say what it would run."""
    from kansoku.runtime import build_plugin

    cfg, registry = _load(args)
    for section in [*cfg.sources, *cfg.sinks]:  # factories check what option parsers cannot
        plugin = build_plugin(cfg, registry, section)
        plugin.close()
    print(f"{cfg.path}: OK")
    for section in cfg.sources:
        print(f"  source {section.id} (plugin {section.plugin})")
    for section in cfg.sinks:
        print(f"  sink {section.id} (plugin {section.plugin})")
    if not cfg.sources or not cfg.sinks:
        print("  warning: nothing will be delivered without at least one source and one sink")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every plugin with its kind, distribution and version."""
    from kansoku.plugins import Registry

    registry = Registry()
    rows = [("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")]
    for info in sorted(registry.infos, key=lambda i: (i.kind, i.name)):
        rows.append((info.kind, info.name, info.distribution, info.version, info.description))
    for path, spec in sorted(registry.commands.items()):
        rows.append(("command", " ".join(path), "", "", spec.help))
    _print_table(rows)
    return 0


def cmd_spool(args: argparse.Namespace) -> int:
    """Inspect and act on the sinks' spools and quarantines."""
    from kansoku.config import read_agent_settings
    from kansoku.spoolcli import spool_command

    settings = read_agent_settings(_config_path(args))
    return spool_command(settings.state_dir / "spool", args.action, args.sink, args.limit)


def cmd_status(args: argparse.Namespace) -> int:
    """Print what the running agent is doing, or the last state it wrote."""
    from kansoku import status
    from kansoku.config import read_agent_settings

    state_dir = read_agent_settings(_config_path(args)).state_dir
    last = status.read(state_dir)
    if last is None:
        print(f"agent status: no status in {state_dir}: the agent has not run with this config")
        return 1
    sys.stdout.write(status.render(last))
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, str(row[-1])]).rstrip())


def build_parser(with_plugins: bool) -> argparse.ArgumentParser:
    """The argument parser; plugin commands are added only when ``with_plugins``."""
    parser = argparse.ArgumentParser(
        prog="agent", description="kansoku monitoring agent: collect, type-check, deliver."
    )
    parser.add_argument("--version", action="version", version=f"kansoku {__version__}")
    _add_global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, func, text in (
        ("run", cmd_run, "run the agent until SIGTERM/SIGINT"),
        ("once", cmd_once, "collect every source once, deliver, exit 0 only if all worked"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--demo",
            action="store_true",
            help="use the built-in demo configuration (emulated devices, stdout sink)",
        )
        p.set_defaults(func=func)
    sub.add_parser("check", help="validate the configuration").set_defaults(func=cmd_check)
    sub.add_parser("plugins", help="list installed plugins").set_defaults(func=cmd_plugins)
    spool = sub.add_parser("spool", help="inspect the sinks' spools and quarantines")
    spool.add_argument(
        "action",
        nargs="?",
        default="status",
        choices=("status", "show-quarantine", "retry-quarantine", "drop-quarantine"),
    )
    spool.add_argument("--sink", help="only this sink (default: all)")
    spool.add_argument("--limit", type=int, default=50, help="show-quarantine: at most N points")
    spool.set_defaults(func=cmd_spool)
    sub.add_parser(
        "status", help="what the agent is doing (or did last): sources, sinks, devices"
    ).set_defaults(func=cmd_status)
    add_cache_commands(sub, _config_path)
    if with_plugins:
        _add_plugin_commands(sub)
    _share_global_options(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    taken = parser._option_string_actions  # a plugin command may use these names itself
    if "-c" not in taken and "--config" not in taken:
        parser.add_argument(
            "-c",
            "--config",
            default=default,
            help=f"configuration file (default: $KANSOKU_CONFIG or {DEFAULT_CONFIG})",
        )
    if "--log-level" not in taken:
        parser.add_argument(
            "--log-level",
            default=default,
            choices=("debug", "info", "warning", "error"),
            help="override [agent] log_level",
        )


def _share_global_options(parser: argparse.ArgumentParser) -> None:
    """Accept -c and --log-level after the subcommand too (``agent once -c FILE``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                # SUPPRESS: a subcommand without the option keeps what came before it
                _add_global_options(subparser, default=argparse.SUPPRESS)
                _share_global_options(subparser)


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from kansoku.plugins import Registry

    groups: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
    for path, spec in sorted(Registry().commands.items()):
        parent = sub
        for depth, word in enumerate(path[:-1]):
            key = " ".join(path[: depth + 1])
            if key not in groups:
                group = parent.add_parser(word, help=f"{word} commands")
                groups[key] = group.add_subparsers(
                    dest=f"sub{depth}", metavar="COMMAND", required=True
                )
            parent = groups[key]
        leaf = parent.add_parser(path[-1], help=spec.help, description=spec.help)
        spec.configure(leaf)
        leaf.set_defaults(func=spec.run)


def _first_command(argv: Sequence[str]) -> str | None:
    words = iter(argv)
    for word in words:
        if word in OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _first_command(argv)
    setup_logging("info")
    try:
        parser = build_parser(with_plugins=command not in CORE_COMMANDS)
        args = parser.parse_args(argv)
        if args.log_level:
            logging.getLogger().setLevel(getattr(logging, args.log_level.upper()))
        return int(args.func(args))
    except KansokuError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
