"""Plugin loading: built-ins, the example package through its entry point, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kansoku.errors import PluginError
from kansoku.plugins import BUILTIN, Registry

EXAMPLE = Path(__file__).parent.parent / "examples" / "kansoku-textfile"


def pip_install_target(package: Path, target: Path) -> None:
    """Install a package (no dependencies) into a folder that a subprocess puts on its path.

    It is built from a copy, so the build leaves nothing in the source tree.
    """
    source = target.parent / f"{package.name}-src"
    shutil.copytree(package, source)
    package = source
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def make_package(root: Path, name: str, code: str) -> Path:
    """A one-module distribution registering ``code`` in the kansoku entry-point group."""
    folder = root / name
    folder.mkdir()
    module = name.replace("-", "_")
    (folder / f"{module}.py").write_text(textwrap.dedent(code))
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "2.5.0"
        [tool.setuptools]
        py-modules = ["{module}"]
        [project.entry-points.kansoku]
        {module} = "{module}"
    """)
    )
    return folder


def with_path(target: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(target), "KANSOKU_NO_ENTRYPOINTS": "0"}


def test_builtins_register_through_the_hooks() -> None:
    registry = Registry(load_entrypoints=False)
    assert {"system"} <= set(registry.sources)
    assert {"stdout"} <= set(registry.sinks)
    info = next(i for i in registry.infos if i.name == "stdout")
    assert (info.kind, info.distribution) == ("sink", BUILTIN)
    assert info.module == "stdout"


def test_example_package_loads_through_its_entry_point(tmp_path, agent_cli, write_config):
    target = tmp_path / "site"
    pip_install_target(EXAMPLE, target)
    listing = agent_cli("plugins", env=with_path(target))
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if " textfile " in line)
    assert row.split()[:4] == ["source", "textfile", "kansoku-textfile", "0.1.0"]

    values = tmp_path / "values.prom"
    values.write_text("# from a cron job\ntemperature=21.5\nfan=3\n")
    config = write_config(f"""
        [agent]
        self_metrics = false
        [source.textfile]
        paths = {values}
        [sink.stdout]
    """)
    result = agent_cli("-c", str(config), "once", env=with_path(target))
    assert result.returncode == 0, result.stderr
    point = json.loads(result.stdout)
    assert point["measurement"] == "textfile"
    assert point["fields"] == {"temperature": 21.5, "fan": 3}
    assert point["tags"] == {"file": "values.prom"}


def test_duplicate_names_name_both_distributions(tmp_path, agent_cli) -> None:
    package = make_package(
        tmp_path,
        "kansoku-dup",
        """
        from kansoku import SourceSpec, hookimpl

        @hookimpl
        def kansoku_register_sources():
            return [SourceSpec("system", lambda options, context: None)]
    """,
    )
    pip_install_target(package, tmp_path / "site")
    result = agent_cli("plugins", env=with_path(tmp_path / "site"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "two plugins register a source named 'system'" in result.stderr
    assert BUILTIN in result.stderr
    assert "kansoku-dup 2.5.0" in result.stderr


def test_bad_hook_implementation_names_the_distribution(tmp_path, agent_cli) -> None:
    package = make_package(
        tmp_path,
        "kansoku-bad",
        """
        from kansoku import hookimpl

        @hookimpl
        def kansoku_register_sources(registry):
            return []
    """,
    )
    pip_install_target(package, tmp_path / "site")
    result = agent_cli("plugins", env=with_path(tmp_path / "site"))
    assert result.returncode == 2
    assert "kansoku-bad 2.5.0" in result.stderr
    assert "registry" in result.stderr
    assert "Traceback" not in result.stderr


def test_hook_returning_the_wrong_type_is_refused() -> None:
    class Wrong:
        from kansoku import hookimpl

        @hookimpl
        def kansoku_register_sinks(self):
            return ["stdout"]

    with pytest.raises(PluginError, match="returned str .* expected SinkSpec"):
        Registry(load_entrypoints=False, extra_plugins=[("wrong", Wrong())])


def test_disabled_plugins_are_not_loaded(monkeypatch) -> None:
    monkeypatch.setenv("KANSOKU_DISABLE_PLUGINS", "system")
    assert "system" not in Registry(load_entrypoints=False).sources
