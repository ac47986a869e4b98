"""Configuration: typed values, ${ENV}, and errors that name the file, section and key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kansoku import config, options
from kansoku.errors import ConfigError
from kansoku.plugins import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def test_sections_instances_and_defaults(write_config, registry: Registry) -> None:
    path = write_config("""
        [agent]
        tags = host=pi, site=home

        [source.system]
        interval = 30s
        jitter = 2s

        [source.system.second]
        interval = 1m30s
        tags = room=attic

        [sink.stdout]
        format = line

        [sink.stdout.off]
        enabled = false
    """)
    cfg = config.load(path, registry)
    assert cfg.agent.tags == {"host": "pi", "site": "home"}
    assert [(s.id, s.plugin, s.instance) for s in cfg.sources] == [
        ("system", "system", None),
        ("system.second", "system", "second"),
    ]
    assert cfg.sources[0].common["interval"] == 30.0
    assert cfg.sources[0].common["jitter"] == 2.0
    assert cfg.sources[1].common["interval"] == 90.0
    assert cfg.sources[1].common["tags"] == {"room": "attic"}
    assert [s.id for s in cfg.sinks] == ["stdout"]
    assert cfg.sinks[0].options == {"format": "line"}
    assert cfg.sinks[0].common["flush_interval"] == 10.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[source.system]\nintervall = 5s\n", r"\[source.system\] unknown key 'intervall'"),
        ("[source.system]\ninterval = soon\n", r"\[source.system\] interval: 'soon': .*duration"),
        ("[sink.stdout]\nformat = xml\n", r"\[sink.stdout\] format: 'xml': .*json, line"),
        ("[source.nope]\n", r"\[source.nope\] no source plugin named 'nope' \(available: "),
        ("[sources.system]\n", r"unknown section \[sources.system\]"),
        ("[source.system.a b]\n", r"\[source.system.a b\] names may use"),
        ("[agent]\nlog_level = loud\n", r"\[agent\] log_level: 'loud'"),
        (
            "[source.system]\ninterval = 0s\n",
            r"\[source.system\] interval: '0s': .*longer than zero",
        ),
        ("[agent]\nfoo = 1\n", r"\[agent\] unknown key 'foo'"),
        (
            "[source.system]\ninterval = 5s\ninterval = 6s\n",
            r"line \d+: \[source.system\] sets 'interval' twice",
        ),
        ("interval = 5s\n", r"line 1: a key before the first \[section\]"),
        ("[source.system]\njust some words\n", r"cannot parse line \d+: 'just some words'"),
        (
            "[sink.stdout]\ninclude = ${KANSOKU_TEST_UNSET}\n",
            r"\[sink.stdout\] include: environment variable KANSOKU_TEST_UNSET is not set",
        ),
    ],
)
def test_errors_name_file_section_and_key(
    tmp_path: Path, registry: Registry, body: str, message: str
) -> None:
    path = tmp_path / "agent.ini"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        config.load(path, registry)
    assert str(path) in str(info.value)


def test_missing_file_is_a_sentence(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load(tmp_path / "absent.ini", registry)


def test_env_substitution(write_config, registry: Registry, monkeypatch) -> None:
    monkeypatch.setenv("KANSOKU_TEST_FORMAT", "line")
    path = write_config("""
        [sink.stdout]
        format = ${KANSOKU_TEST_FORMAT}
        include = ${KANSOKU_TEST_UNSET:-system}
    """)
    cfg = config.load(path, registry)
    assert cfg.sinks[0].options["format"] == "line"
    assert cfg.sinks[0].common["include"] == ["system"]


def test_durations_sizes_tags() -> None:
    assert options.duration("30s") == 30
    assert options.duration("5m") == 300
    assert options.duration("1h30m") == 5400
    assert options.duration("250ms") == 0.25
    assert options.duration("12") == 12
    for bad in ("", "5 minutes", "-5s", "s"):
        with pytest.raises(ValueError):
            options.duration(bad)
    assert options.size("100MB") == 100_000_000
    assert options.size("64MiB") == 64 * 1024**2
    assert options.size("1g") == 10**9
    with pytest.raises(ValueError):
        options.size("lots")
    with pytest.raises(ValueError, match="not key=value"):
        options.tag_map("host")


def test_secret_never_prints() -> None:
    secret = options.secret("hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "hunter2"


def test_default_state_dir_for_root_and_users(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    assert config.default_state_dir() == Path("/var/lib/kansoku")
    monkeypatch.setattr(config.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert config.default_state_dir() == tmp_path / "kansoku"


def test_readable_secret_file_warns(tmp_path: Path, caplog) -> None:
    spec_options = [options.secret]
    assert spec_options  # the check below is about the file mode only
    path = tmp_path / "agent.ini"
    path.write_text("[agent]\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="kansoku.config"):
        config._warn_if_readable(path)
    assert "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="kansoku.config"):
        config._warn_if_readable(path)
    assert caplog.text == ""


def test_check_command_reports_errors_without_traceback(agent_cli, tmp_path: Path) -> None:
    path = tmp_path / "agent.ini"
    path.write_text("[source.system]\ninterval = often\n")
    result = agent_cli("-c", str(path), "check")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: [source.system] interval: 'often'" in result.stderr


def test_check_command_accepts_the_shipped_example(agent_cli) -> None:
    example = Path(__file__).parent.parent / "etc" / "agent.ini"
    result = agent_cli("-c", str(example), "check", env={"KANSOKU_NO_ENTRYPOINTS": "1"})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
