"""Shared fixtures: real daemons (tests/daemons.py), config files and the agent CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.daemons import daemons  # noqa: F401  (fixture)

# Third-party plugins installed on the developer's machine must not leak into tests;
# tests that want entry points turn this off explicitly.
os.environ.setdefault("KANSOKU_NO_ENTRYPOINTS", "1")


@pytest.fixture
def write_config(tmp_path: Path):
    """Write an INI (dedented) with ``state_dir`` pointing into tmp_path; returns its path."""

    def write(text: str, name: str = "agent.ini", state_dir: Path | None = None) -> Path:
        body = textwrap.dedent(text)
        state = state_dir or tmp_path / "state"
        if "[agent]" in body:
            body = body.replace("[agent]", f"[agent]\nstate_dir = {state}", 1)
        else:
            body = f"[agent]\nstate_dir = {state}\n\n{body}"
        path = tmp_path / name
        path.write_text(body)
        path.chmod(0o600)
        return path

    return write


def run_agent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kw
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agent`` CLI in a subprocess (the console script's module)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kansoku.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        **kw,
    )


def start_agent(
    config: Path, *args: str, env: dict[str, str] | None = None, **popen: object
) -> subprocess.Popen[str]:
    """``agent -c CONFIG run`` (or the given arguments) as a background process, text mode."""
    argv = [sys.executable, "-m", "kansoku.cli", "-c", str(config), *(args or ("run",))]
    return subprocess.Popen(argv, text=True, env={**os.environ, **(env or {})}, **popen)


@pytest.fixture
def agent_cli():
    """``agent_cli(*args)`` runs the agent CLI and returns the CompletedProcess."""
    return run_agent
