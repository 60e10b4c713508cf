"""Config errors name the file, the key and what is wrong, and never show a secret.

They go to the terminal and, for a service, to the journal: a raw token pasted
where its hash belongs, or one bad token entry, must not put any token, hash,
site or name of the token list there.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from agent.config import AgentConfig
from collector.auth import hash_token
from collector.config import CollectorConfig, load_collector_config
from contract.configfile import ConfigError, is_sensitive
from tests.conftest import ROOT

RAW_TOKEN = "vdw_Raw9TokenPastedWhereItsHashBelongs_x7Qm2Zk4Lp8Wc3"
GOOD = [  # (sha256, site, name) of the entries around the bad one
    (hash_token("vdw_first"), "City Hall", "cityhall-vdas"),
    (hash_token("vdw_third"), "Harbor Office", "harbor-vdas"),
]
SECRET_NAME = re.compile(r"token|secret|password|sha256|hash")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "collector.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_text(path: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_collector_config(path)
    return f"{e.value}\n{e.value.render()}"


def token_entries(middle: str) -> str:
    (h1, s1, n1), (h3, s3, n3) = GOOD
    return (f'[[auth.tokens]]\nsha256 = "{h1}"\nsite = "{s1}"\nname = "{n1}"\n\n'
            f"[[auth.tokens]]\n{middle}\n\n"
            f'[[auth.tokens]]\nsha256 = "{h3}"\nsite = "{s3}"\nname = "{n3}"\n')


def assert_shows_nothing_of_the_tokens(text: str) -> None:
    assert RAW_TOKEN not in text
    for sha256, site, name in GOOD:
        assert sha256 not in text and site not in text and name not in text
    assert "TokenScope" not in text


def test_a_raw_token_in_a_token_entry_shows_neither_it_nor_the_other_entries(tmp_path: Path) -> None:
    path = write(tmp_path, token_entries(f'sha256 = "{RAW_TOKEN}"\nsite = "Depot"\nname = "depot-vdas"'))
    text = error_text(path)
    assert_shows_nothing_of_the_tokens(text)
    assert "depot-vdas" not in text and "Depot" not in text
    # It still says where and what: the file, the key, which entry, what is expected.
    assert path in text and "auth.tokens: every token needs sha256 (64 hex digits" in text
    assert "item 1 (of 3)" in text


def test_a_bad_key_in_a_token_entry_names_the_key_not_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, token_entries(f'sha256 = ["{RAW_TOKEN}"]\nsite = "Depot"'))
    text = error_text(path)
    assert_shows_nothing_of_the_tokens(text)
    assert "auth.tokens: item 1: sha256: must be a string, got a list" in text


def test_a_raw_token_as_the_scrape_bearer_hash_is_shown_by_its_length_only(tmp_path: Path) -> None:
    path = write(tmp_path, f'[auth]\nscrape_bearer_sha256 = "{RAW_TOKEN}"\n')
    text = error_text(path)
    assert RAW_TOKEN not in text
    assert f"auth.scrape_bearer_sha256: must be 64 hex digits, got a string of {len(RAW_TOKEN)} characters" in text


@pytest.mark.parametrize("line", [
    f'scrape_basic_password_hash_file = "{RAW_TOKEN}"',
    f'scrape_basic_password_hash_env = "{RAW_TOKEN}"',
    f'scrape_basic_password_hash = "{RAW_TOKEN}"\nscrape_basic_user = "prometheus"',
    f'scrape_basic_password_hash = ["{RAW_TOKEN}"]',
])
def test_the_scrape_password_hash_is_never_shown(tmp_path: Path, line: str) -> None:
    text = error_text(write(tmp_path, f"[auth]\n{line}\n"))
    assert RAW_TOKEN not in text and "auth.scrape_basic_password_hash" in text


def secret_like_fields(schema: type) -> Iterator[Tuple[str, dataclasses.Field]]:
    for section in dataclasses.fields(schema):
        for spec in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            if SECRET_NAME.search(spec.name):
                yield f"{section.name}.{spec.name}", spec


@pytest.mark.parametrize("schema", [CollectorConfig, AgentConfig])
def test_every_secret_is_marked_so_that_errors_never_show_it(schema: type) -> None:
    found: List[str] = []
    for where, spec in secret_like_fields(schema):
        found.append(where)
        assert is_sensitive(spec), f"{where} holds a secret: declare it with secret() or checked(..., sensitive=True)"
    assert found  # the names did match something: tokens, hashes, secrets


def test_check_config_prints_the_problem_without_the_token(tmp_path: Path) -> None:
    path = write(tmp_path, token_entries(f'sha256 = "{RAW_TOKEN}"\nsite = "Depot"'))
    r = subprocess.run([sys.executable, "-m", "collector", "--config", path, "--check-config"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert "auth.tokens" in r.stderr
    assert_shows_nothing_of_the_tokens(r.stdout + r.stderr)
