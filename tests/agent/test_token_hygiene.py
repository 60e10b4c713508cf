"""The push token never reaches a log: a token file holding two lines is refused at load, and a
header requests refuses is described without its value."""

from __future__ import annotations

import json
import logging

import pytest

from agent.config import load_agent_config
from agent.push import Pusher
from contract.configfile import ConfigError
from tests.conftest import FIXTURES, free_port

GOOD = json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())


def test_a_token_file_with_two_lines_is_refused_without_showing_either(tmp_path) -> None:
    (tmp_path / "push.token").write_text("vdw_OLDSECRETOLDSECRET\nvdw_NEWSECRETNEWSECRET\n")  # rotation, appended
    (tmp_path / "agent.toml").write_text(
        f'[agent]\ncollector_url = "http://127.0.0.1:{free_port()}"\ntoken_file = "push.token"\n')
    with pytest.raises(ConfigError) as refused:
        load_agent_config(str(tmp_path / "agent.toml"), env={})
    text = refused.value.render()
    assert "agent.token" in text and "more than one line" in text
    assert "SECRET" not in text


def test_a_token_requests_refuses_as_a_header_is_not_logged(caplog) -> None:
    pusher = Pusher(f"http://127.0.0.1:{free_port()}", token="vdw_OLDSECRET\nvdw_NEWSECRET", timeout=1.0)
    try:
        with caplog.at_level(logging.DEBUG):
            result = pusher.push(dict(GOOD), pusher.clock() + 1.0)
    finally:
        pusher.close()
    assert result.outcome == "failed"
    assert "SECRET" not in caplog.text, caplog.text
    assert "check the token" in caplog.text
