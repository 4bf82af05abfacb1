"""Config and manifest checks: a bad one stops the start with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config
from tests.conftest import write_manifest


def dropkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_defaults_work_for_sim() -> None:
    config = parse_config({})
    assert config.http.port == 8080 and config.orders.max_qty == 99
    assert config.kit_id.startswith("kit-") and len(config.kit_id) == 12


@pytest.mark.parametrize(("data", "message"), [
    ({"http": {"port": "eighty"}},
     "[http] port: expected an integer from 0 to 65535, got 'eighty'"),
    ({"http": {"port": 70000}}, "[http] port: expected an integer from 0 to 65535, got 70000"),
    ({"http": {"prot": 80}}, "[http] prot: unknown key; expected one of"),
    ({"htp": {}}, "[htp]: unknown section; expected one of http, kit, mqtt, nut, orders"),
    ({"kit": {"id": "has spaces"}}, "[kit] id: expected 1 to 64 letters"),
    ({"kit": {"id": "hq"}}, "and not 'hq' (HQ's own topics"),
    ({"orders": {"max_qty": True}}, "[orders] max_qty: expected an integer from 1 to 10000"),
    ({"http": {"staff_token": "short"}}, "[http] staff_token: expected a token of at least 16"),
    ({"kit": "x"}, "[kit]: expected a table of keys, got 'x'"),
])
def test_a_wrong_key_or_value_names_file_key_and_expectation(data, message) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, source="/etc/dropkit/agent.toml")
    assert str(raised.value).startswith("/etc/dropkit/agent.toml: ")
    assert message in str(raised.value)


def test_relative_manifest_is_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[orders]\nmanifest = "stock.toml"\n')
    assert load_config(tmp_path / "agent.toml").orders.manifest == str(tmp_path / "stock.toml")


def test_a_corrupt_config_stops_the_start_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_bytes(b"[http\nport = 80\x00\xff")
    for command in (["run", "--config", str(bad)], ["sim", "--config", str(bad)],
                    ["config", "check", str(bad)]):
        answer = dropkit(*command)
        assert answer.returncode == 2
        lines = answer.stderr.strip().splitlines()
        assert len(lines) == 1, answer.stderr
        assert lines[0].startswith(f"dropkit: {bad}: not UTF-8 text")
    bad.write_text("[http]\nport = = 80\n")
    answer = dropkit("sim", "--config", str(bad))
    assert answer.returncode == 2 and answer.stderr.count("\n") == 1
    assert f"{bad}: not valid TOML" in answer.stderr
    answer = dropkit("run", "--config", str(tmp_path / "missing.toml"))
    assert answer.stderr == f"dropkit: {tmp_path / 'missing.toml'}: no such config file\n"


def test_an_unreadable_manifest_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    for content, expected in [(None, "cannot read: No such file or directory"),
                              ("version = 1\n", "'version' must be a string"),
                              ('version = "x"\n[[items]]\nsku = "A"\nname = "A"\n'
                               'price_cents = 1.5\nqty = 1\n',
                               "item 1 (A): 'price_cents' must be a whole number"),
                              ("{{{", "cannot parse")]:
        manifest = tmp_path / "stock.toml"
        manifest.unlink(missing_ok=True)
        if content is not None:
            manifest.write_text(content)
        config.write_text('[orders]\nmanifest = "stock.toml"\n')
        answer = dropkit("sim", "--config", str(config), "--http-port", "0",
                         "--state-dir", str(tmp_path / "state"))
        assert answer.returncode == 2, answer.stderr
        assert answer.stderr.count("\n") == 1, answer.stderr
        assert answer.stderr.startswith(f"dropkit: manifest: {manifest}: ")
        assert expected in answer.stderr


def test_config_check_reports_ok(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "A", 100, 3)], version="v9")
    config = tmp_path / "agent.toml"
    config.write_text(f'[kit]\nid = "stall-7"\n[orders]\nmanifest = "{manifest.name}"\n')
    answer = dropkit("config", "check", str(config))
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.splitlines() == [f"{config}: manifest v9 with 1 items",
                                          f"{config}: OK (kit stall-7)"]


def test_dropkit_config_env_names_the_file(tmp_path: Path) -> None:
    import os
    config = tmp_path / "agent.toml"
    config.write_text("[http]\nport = 0\nwhat = 1\n")
    answer = dropkit("run", env={**os.environ, "DROPKIT_CONFIG": str(config)})
    assert answer.returncode == 2 and f"{config}: [http] what: unknown key" in answer.stderr
