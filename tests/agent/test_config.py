from __future__ import annotations

import typing
from pathlib import Path

import pytest

from agent.config import AgentConfig, AgentSection, SessionsSection, load_agent_config, resolve_host
from contract.configfile import ConfigError


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_with_no_file() -> None:
    config = load_agent_config(None)
    assert config == AgentConfig()
    a, s, c = config.agent, config.sessions, config.capacity
    assert (a.collector_url, a.interval, a.host, a.site, a.delivery_group, a.timeout) == \
        ("http://127.0.0.1:9847", 15.0, "", "default", "default", 5.0)
    assert (a.token, a.ca_file, a.disabled_collectors, a.log_level) == ("", "", (), "info")
    assert (s.source, s.idle_after, s.max_listed, s.per_user_top, s.pseudonymize, s.pseudonym_secret) == \
        ("auto", 1800.0, 500, 0, True, "")
    assert (c.max_sessions, c.accepting, c.drain_file, c.maintenance, c.maintenance_file) == \
        (0, True, "", False, "")


def test_tuple_fields_resolve_under_get_type_hints() -> None:
    assert typing.get_type_hints(AgentSection)["disabled_collectors"] == typing.Tuple[str, ...]


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = write(tmp_path, """
[agent]
collector_url = "https://collector.example:9847"
interval = 30
host = "vda-win-01"
site = "City Hall"
delivery_group = "Office Desktops"
timeout = 3.5
token = "t0k3n"
ca_file = "ca.pem"
disabled_collectors = ["disks", "interfaces"]
log_level = "debug"

[sessions]
source = "windows"
idle_after = 900
max_listed = 100
per_user_top = 10
pseudonymize = false
pseudonym_secret = "pepper"

[capacity]
max_sessions = 25
accepting = false
drain_file = "/etc/vdiwatch/drain"
maintenance = true
maintenance_file = "maintenance.flag"
""")
    config = load_agent_config(path)
    assert config.agent.interval == 30.0 and isinstance(config.agent.interval, float)
    assert config.agent.disabled_collectors == ("disks", "interfaces")
    assert config.agent.ca_file == str(tmp_path / "ca.pem")  # relative to the file's folder
    assert config.agent.token == "t0k3n"
    assert config.sessions == SessionsSection(source="windows", idle_after=900.0, max_listed=100,
                                              per_user_top=10, pseudonymize=False, pseudonym_secret="pepper")
    assert config.capacity.max_sessions == 25 and config.capacity.accepting is False
    assert config.capacity.drain_file == "/etc/vdiwatch/drain"
    assert config.capacity.maintenance_file == str(tmp_path / "maintenance.flag")


def test_every_problem_is_named_with_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
[agent]
intervall = 15
interval = "15"
site = "City\\nHall"
collector_url = "ftp://collector"
disabled_collectors = ["dsks"]

[sessions]
source = "wts"
max_listed = 5000

[capcity]
""")
    with pytest.raises(ConfigError) as e:
        load_agent_config(path)
    text = e.value.render()
    assert path in text
    for expected in ("agent.intervall: unknown key", "agent.interval: must be a number, got a string",
                     "agent.site: must be 1 to 128 characters", "agent.collector_url: must be an http://",
                     "agent.disabled_collectors: must list collector names", "sessions.source: must be one of",
                     "sessions.max_listed: must be an integer from 0 to 2000", "[capcity]: unknown section"):
        assert expected in text, expected


@pytest.mark.parametrize("line, message", [
    ("interval = 0.5", "agent.interval: must be a number of seconds from 1"),
    ('host = "vda 01"', "agent.host: must be empty"),
    ("timeout = 0", "agent.timeout: must be a number of seconds from 0"),
    ('log_level = "verbose"', "agent.log_level: must be one of"),
    ('ca_file = "/nonexistent/ca.pem"', "agent.ca_file: /nonexistent/ca.pem is not a file"),
])
def test_bad_values(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_agent_config(write(tmp_path, f"[agent]\n{line}\n"))
    assert message in str(e.value)


def test_token_from_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "agent.token").write_text("s3cret\n")
    config = load_agent_config(write(tmp_path, '[agent]\ntoken_file = "agent.token"\n'))
    assert config.agent.token == "s3cret"


def test_token_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ntoken_env = "VDIWATCH_TOKEN"\n[sessions]\npseudonym_secret_env = "PEPPER"\n')
    config = load_agent_config(path, env={"VDIWATCH_TOKEN": "from-env", "PEPPER": "p"})
    assert (config.agent.token, config.sessions.pseudonym_secret) == ("from-env", "p")
    with pytest.raises(ConfigError, match="agent.token_env: environment variable VDIWATCH_TOKEN is not set"):
        load_agent_config(path, env={"PEPPER": "p"})


def test_missing_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent.token_file: cannot read"):
        load_agent_config(write(tmp_path, '[agent]\ntoken_file = "missing.token"\n'))


def test_host_from_the_os_is_short_and_lower_case() -> None:
    assert resolve_host("", lambda: "VDA-WIN-01.corp.example.com") == "vda-win-01"
    assert resolve_host("configured-01", lambda: "OTHER") == "configured-01"
    with pytest.raises(ValueError, match="set host"):
        resolve_host("", lambda: "bad name")


def test_example_agent_toml_is_valid_and_matches_defaults() -> None:
    from agent.config import AgentConfig, load_agent_config
    from tests.conftest import ROOT
    assert load_agent_config(str(ROOT / "config" / "agent.toml")) == AgentConfig()


RAW_TOKEN = "vdw_Raw9TokenPastedOneLineTooHigh_x7Qm2Zk4Lp8Wc3Fh"


@pytest.mark.parametrize("line, message", [
    (f'token_file = "{RAW_TOKEN}"', "agent.token_file: cannot read the file named by a string of 50 characters"),
    (f'token_env = "{RAW_TOKEN}"', "agent.token_env: environment variable named by a string of 50 characters"),
    (f'token = ["{RAW_TOKEN}"]', "agent.token: must be a string, got a list"),
])
def test_a_token_in_the_wrong_place_is_never_shown(tmp_path: Path, line: str, message: str, capsys) -> None:
    from agent.cli import main
    path = write(tmp_path, f"[agent]\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_agent_config(path, env={})
    assert RAW_TOKEN not in str(e.value) and RAW_TOKEN not in e.value.render()
    assert message in str(e.value) and path in str(e.value)
    assert main(["--config", path, "--check-config"]) == 2  # what the terminal and the journal get
    err = capsys.readouterr().err
    assert message in err and RAW_TOKEN not in err


@pytest.mark.parametrize("section, line", [
    ("sessions", f'pseudonym_secret_file = "{RAW_TOKEN}"'),
    ("sessions", f'pseudonym_secret_env = "{RAW_TOKEN}"'),
    ("sessions", f'pseudonym_secret = {{ value = "{RAW_TOKEN}" }}'),
])
def test_the_pseudonym_secret_is_never_shown(tmp_path: Path, section: str, line: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_agent_config(write(tmp_path, f"[{section}]\n{line}\n"), env={})
    assert RAW_TOKEN not in e.value.render() and "sessions.pseudonym_secret" in str(e.value)


def test_paths_and_variable_names_are_still_shown(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ntoken_file = "tokens/agent.token"\n[sessions]\npseudonym_secret_env = "PEPPER"\n')
    with pytest.raises(ConfigError) as e:
        load_agent_config(path, env={})
    text = str(e.value)
    assert f"agent.token_file: cannot read {tmp_path / 'tokens' / 'agent.token'}" in text
    assert "sessions.pseudonym_secret_env: environment variable PEPPER is not set" in text


def test_ordinary_values_are_shown_but_a_url_without_its_password_and_a_list_by_its_bad_items(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\nlog_level = "verbose"\ncollector_url = "ftp://ops:hunter2@collector:9847"\n'
                           'disabled_collectors = ["cpu", "dsks", "load"]\ninterval = 0.5\n')
    with pytest.raises(ConfigError) as e:
        load_agent_config(path)
    text = str(e.value)
    assert "agent.log_level: must be one of debug, info, warning, error, got 'verbose'" in text
    assert "got 'ftp://***@collector:9847'" in text and "hunter2" not in text
    assert "agent.disabled_collectors: must list collector names" in text and "item 1 is 'dsks' (of 3)" in text
    assert "'cpu'" not in text  # not the whole list
    assert "agent.interval: must be a number of seconds from 1 to 86400, got 0.5" in text


def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes('[agent]\nsite = "Rathaus"\n'.encode("utf-16"))
    with pytest.raises(ConfigError) as e:
        load_agent_config(str(path))
    assert str(path) in e.value.render() and "not UTF-8" in e.value.render()


def test_collector_url_on_the_command_line_is_shown_without_its_password(capsys) -> None:
    from agent.cli import main

    assert main(["--collector", "ftp://user:s3cret@collector:9847", "--once", "--print"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "***@" in err
