"""What a SIGHUP may change: who may push and scrape, never whether anyone must authenticate."""

from __future__ import annotations

import dataclasses

from collector.auth import TokenScope, hash_password, hash_token
from collector.cli import insecure_listen_refusal, reload_refusal, restart_needed
from collector.config import AuthSection, CollectorConfig, CollectorSection

TOKENS = (TokenScope(hash_token("vdw_a"), "City Hall"),)
SECURED = CollectorConfig(auth=AuthSection(tokens=TOKENS))


def with_auth(**changes) -> CollectorConfig:
    return dataclasses.replace(SECURED, auth=dataclasses.replace(SECURED.auth, **changes))


def test_start_check_refuses_an_open_address_without_tokens() -> None:
    assert "without push authentication" in insecure_listen_refusal(CollectorConfig(), "0.0.0.0")
    assert insecure_listen_refusal(CollectorConfig(), "127.0.0.1") is None
    assert insecure_listen_refusal(with_auth(tokens=(), insecure=True), "0.0.0.0") is None
    assert insecure_listen_refusal(SECURED, "10.1.2.3") is None


def test_reload_may_rotate_tokens() -> None:
    rotated = with_auth(tokens=TOKENS + (TokenScope(hash_token("vdw_b"), "City Hall"),))
    assert reload_refusal(SECURED, rotated, "0.0.0.0") is None


def test_reload_may_not_drop_every_token_even_on_loopback_or_with_insecure() -> None:
    assert "without push authentication" in reload_refusal(SECURED, with_auth(tokens=()), "0.0.0.0")
    assert "takes a restart" in reload_refusal(SECURED, with_auth(tokens=()), "127.0.0.1")
    assert "takes a restart" in reload_refusal(SECURED, with_auth(tokens=(), insecure=True), "0.0.0.0")
    open_start = with_auth(tokens=())
    assert reload_refusal(open_start, open_start, "127.0.0.1") is None


def test_reload_may_not_turn_scrape_authentication_off() -> None:
    scraped = with_auth(scrape_basic_user="prometheus", scrape_basic_password_hash=hash_password("pw", iterations=1))
    assert "scrape authentication" in reload_refusal(scraped, SECURED, "127.0.0.1")
    assert reload_refusal(SECURED, scraped, "127.0.0.1") is None


def test_restart_warning_compares_with_what_the_process_started_with() -> None:
    changed = dataclasses.replace(SECURED, collector=CollectorSection(max_hosts=5))
    assert restart_needed(SECURED, changed) == ["collector"]
    assert restart_needed(changed, changed) == []
