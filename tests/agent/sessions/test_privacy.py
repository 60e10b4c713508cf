"""Pseudonyms: stable per secret, different across secrets, one per person whatever the spelling."""

from __future__ import annotations

import logging
import re

import pytest

from agent.sessions.privacy import Pseudonymizer, normalize, pseudonym


@pytest.mark.parametrize("raw", ["CORP\\JDoe", "corp\\jdoe", "jdoe@corp.example", "JDOE", " jdoe ",
                                 "OTHERDOM\\jdoe", "jdoe"])
def test_domain_forms_fold_to_one_name(raw: str) -> None:
    assert normalize(raw) == "jdoe"
    assert pseudonym(raw, "s3cret") == pseudonym("jdoe", "s3cret")


def test_format_is_u_dash_twelve_hex_digits() -> None:
    assert re.fullmatch(r"u-[0-9a-f]{12}", pseudonym("alice", "s3cret"))


def test_same_user_on_two_hosts_gets_the_same_pseudonym() -> None:
    host_a = Pseudonymizer("site-secret", "City Hall")
    host_b = Pseudonymizer("site-secret", "City Hall")
    assert host_a.label("CORP\\alice") == host_b.label("alice@corp.example")


def test_another_secret_gives_another_pseudonym() -> None:
    assert Pseudonymizer("secret-1").label("alice") != Pseudonymizer("secret-2").label("alice")


def test_different_users_differ() -> None:
    p = Pseudonymizer("s")
    assert len({p.label(f"user{i}") for i in range(1000)}) == 1000


def test_unknown_user_stays_empty() -> None:
    assert Pseudonymizer("s").label("") == "" and Pseudonymizer("s", enabled=False).label("  ") == ""


def test_without_secret_the_site_keys_the_hash_and_one_warning_says_so(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sessions.privacy"):
        p = Pseudonymizer("", "City Hall")
        labels = [p.label("alice") for _ in range(3)]
    warnings = [r for r in caplog.records if "pseudonym_secret" in r.getMessage()]
    assert len(warnings) == 1 and "reversed" in warnings[0].getMessage()
    assert labels[0] == Pseudonymizer("", "City Hall").label("alice")
    assert labels[0] != Pseudonymizer("", "Town Hall").label("alice")
    assert labels[0] == pseudonym("alice", "vdiwatch-site:City Hall")


def test_plain_names_only_on_opt_in(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        plain = Pseudonymizer("", "City Hall", enabled=False)
    assert not caplog.records  # nothing is hashed with a guessable key, nothing to warn about
    assert plain.label("CORP\\Alice") == "alice"
    long_name = "x" * 200  # cannot be a label value: falls back to its pseudonym, the session is kept
    assert plain.label(long_name).startswith("u-")
