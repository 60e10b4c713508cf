"""broker.toml through the contract's loader: every problem named at once, secrets never shown,
an authentication method whose package is missing a clear configuration error."""

from __future__ import annotations

import sys
import types

import pytest

from broker.auth import CitrixCloudAuth, build_auth
from broker.config import AuthSection, load_broker_config
from contract.configfile import ConfigError
from tests.conftest import ROOT


def write(tmp_path, text: str) -> str:
    path = tmp_path / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems(tmp_path, text: str, env=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_broker_config(write(tmp_path, text), env=env or {})
    return e.value.render()


def test_the_example_config_is_valid_apart_from_its_package(tmp_path) -> None:
    text = (ROOT / "config" / "broker.toml").read_text(encoding="utf-8")
    text = text.replace('method = "negotiate"', 'method = "none"')
    config = load_broker_config(write(tmp_path, text), env={})
    assert config.odata.url.endswith("/Citrix/Monitor/OData/v4/Data")


def test_every_problem_is_named_at_once(tmp_path) -> None:
    out = problems(tmp_path, """
[broker]
interval = 0.5
host_name = "netbios"
hold = 30.0
[odata]
url = "https://user:pw@ddc01.example/Citrix/Monitor/OData/v4/Data"
power_state_codes = ["on", "hibernating"]
timeout = 200.0
poll_timeout = 100.0
[auth]
method = "kerberos"
""")
    for needle in ("broker.interval: must be between 1 and 3600", "broker.host_name: must be \"short\" or \"fqdn\"",
                   "odata.power_state_codes: must be from on, off", "item 1 is 'hibernating'",
                   "auth.method: must be one of none, ntlm, negotiate, citrix_cloud"):
        assert needle in out, out
    out = problems(tmp_path, """
[broker]
hold = 30.0
interval = 60.0
[odata]
url = "https://user:pw@ddc01.example/x"
timeout = 200.0
poll_timeout = 100.0
[auth]
method = "none"
""")
    for needle in ("odata.url: must not carry a user or password", "odata.timeout: must not be longer",
                   "broker.hold: must be 0"):
        assert needle in out, out
    assert "pw" not in out.replace("password", "")


def test_url_is_required(tmp_path) -> None:
    assert "odata.url: is required" in problems(tmp_path, "[auth]\nmethod = \"none\"\n")


@pytest.mark.parametrize("method, package", [("ntlm", "requests-ntlm"),
                                             ("negotiate", "requests-negotiate-sspi or requests-gssapi")])
def test_a_missing_auth_package_is_a_config_error_naming_it(tmp_path, monkeypatch, method, package) -> None:
    for name in ("requests_ntlm", "requests_negotiate_sspi", "requests_gssapi", "requests_kerberos"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed (requests-ntlm is, for the tests)
    out = problems(tmp_path, f"""
[odata]
url = "http://ddc01.example/Citrix/Monitor/OData/v4/Data"
[auth]
method = "{method}"
username = "CORP\\\\svc-vdiwatch"
password_env = "BROKER_PASSWORD"
""", env={"BROKER_PASSWORD": "hunter2-secret"})
    assert f"needs the Python package {package}" in out and "pip install 'vdiwatch[broker-" in out
    assert "hunter2" not in out


def test_secrets_come_from_env_or_file_and_are_never_shown(tmp_path, monkeypatch) -> None:
    (tmp_path / "secret.txt").write_text("file-secret-value\n", encoding="utf-8")
    config = load_broker_config(write(tmp_path, """
[odata]
url = "https://api-eu.cloud.com/monitorodata"
[auth]
method = "citrix_cloud"
customer_id = "acme"
client_id = "3e5a"
client_secret_file = "secret.txt"
"""), env={})
    assert config.auth.client_secret == "file-secret-value"
    out = problems(tmp_path, """
[odata]
url = "https://api-eu.cloud.com/monitorodata"
[auth]
method = "citrix_cloud"
client_secret_env = "this-is-the-secret-itself"
""")
    assert "this-is-the-secret-itself" not in out and "is it the secret itself?" in out
    out = problems(tmp_path, """
[odata]
url = "https://api-eu.cloud.com/monitorodata"
[auth]
method = "citrix_cloud"
client_secret_env = "SECRET"
token_url = "http://api.example/{customer_id}/tokens"
""", env={"SECRET": "s3cr3t-value"})
    assert "s3cr3t-value" not in out
    assert "auth.customer_id: is required" in out and "auth.client_id: is required" in out
    assert "auth.token_url: must be https://" in out


def test_auth_objects_by_method(monkeypatch) -> None:
    assert build_auth(AuthSection(method="none"), 5.0) is None
    cloud = build_auth(AuthSection(method="citrix_cloud", customer_id="acme", client_id="i", client_secret="s"), 5.0)
    assert isinstance(cloud, CitrixCloudAuth)
    assert cloud.token_url == "https://api-us.cloud.com/cctrustoauth2/acme/tokens/clients"
    fake = types.ModuleType("requests_ntlm")

    class HttpNtlmAuth:
        def __init__(self, user: str, password: str) -> None:
            self.args = ("ntlm", user, password)
    fake.HttpNtlmAuth = HttpNtlmAuth
    monkeypatch.setitem(sys.modules, "requests_ntlm", fake)
    ntlm = build_auth(AuthSection(method="ntlm", username="CORP\\svc", password="pw"), 5.0)
    assert isinstance(ntlm, HttpNtlmAuth) and ntlm.args == ("ntlm", "CORP\\svc", "pw")


def test_citrix_cloud_sends_its_bearer_token_to_the_odata_url_only_over_https(tmp_path) -> None:
    """The token is a credential like the client secret: an http:// OData URL would send it in clear text."""
    out = problems(tmp_path, """
[odata]
url = "http://api-eu.cloud.com/monitorodata"
[auth]
method = "citrix_cloud"
customer_id = "acme"
client_id = "3e5a"
client_secret_env = "SECRET"
""", env={"SECRET": "s3cr3t-value"})
    assert "odata.url: must be https://" in out
    local = load_broker_config(write(tmp_path, """
[odata]
url = "http://127.0.0.1:8080/monitorodata"
[auth]
method = "citrix_cloud"
customer_id = "acme"
client_id = "3e5a"
client_secret_env = "SECRET"
"""), env={"SECRET": "s3cr3t-value"})
    assert local.odata.url.startswith("http://127.0.0.1")
