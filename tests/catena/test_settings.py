from __future__ import annotations

import pytest

from catena.settings import AdminSettings, AuthgateSettings, SettingsError, load, parse_token_secrets


def test_defaults() -> None:
    settings = load(AdminSettings, environ={})
    assert (settings.admin_host, settings.admin_port) == ("127.0.0.1", 8080)
    assert load(AuthgateSettings, environ={}).auth_port == 8081


def test_values_come_from_catena_variables() -> None:
    env = {"CATENA_ADMIN_PORT": "9090", "CATENA_WEBHOOKS_ENABLED": "false", "CATENA_LOG_LEVEL": "debug"}
    settings = load(AdminSettings, environ=env)
    assert settings.admin_port == 9090 and settings.webhooks_enabled is False
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CATENA_ADMIN_PORT": "eighty"}, "CATENA_ADMIN_PORT"),
        ({"CATENA_ADMIN_PORT": "70000"}, "CATENA_ADMIN_PORT"),
        ({"CATENA_LOG_LEVEL": "loud"}, "CATENA_LOG_LEVEL"),
        ({"CATENA_BCRYPT_ROUNDS": "2"}, "CATENA_BCRYPT_ROUNDS"),
        ({"CATENA_REDIS_PREFIX": "has space"}, "CATENA_REDIS_PREFIX"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load(AdminSettings, environ=env)


def test_settings_are_frozen() -> None:
    settings = load(AdminSettings, environ={})
    with pytest.raises(AttributeError):
        settings.admin_port = 1  # type: ignore[misc]


def test_token_secrets() -> None:
    assert parse_token_secrets("a:" + "0" * 32 + ", b:" + "f" * 40) == [
        ("a", b"0" * 32),
        ("b", b"f" * 40),
    ]
    with pytest.raises(SettingsError, match="CATENA_TOKEN_SECRETS"):
        parse_token_secrets("nokid")
    with pytest.raises(SettingsError, match="CATENA_TOKEN_SECRETS"):
        parse_token_secrets("k:" + "s" * 31)
