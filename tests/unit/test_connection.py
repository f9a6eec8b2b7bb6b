"""Redis URLs of every supported kind, and a printable form without the password."""

from __future__ import annotations

import pytest

from jobs.connection import redacted, redis_settings_from_url


def test_a_redis_url_gives_host_port_database_and_password() -> None:
    settings = redis_settings_from_url("redis://:s3cret@cache.example:6380/3")
    assert (settings.host, settings.port, settings.database) == ("cache.example", 6380, 3)
    assert settings.password == "s3cret"
    assert settings.ssl is False
    assert settings.sentinel is False


def test_a_rediss_url_uses_tls_and_default_port() -> None:
    settings = redis_settings_from_url("rediss://worker:s3cret@cache.example/1")
    assert (settings.host, settings.port, settings.database) == ("cache.example", 6379, 1)
    assert (settings.username, settings.password) == ("worker", "s3cret")
    assert settings.ssl is True


def test_a_unix_url_gives_the_socket_path_and_database() -> None:
    settings = redis_settings_from_url("unix:///run/redis/redis.sock?db=4")
    assert settings.unix_socket_path == "/run/redis/redis.sock"
    assert settings.database == 4


def test_connection_retries_are_passed_through() -> None:
    assert redis_settings_from_url("redis://h", conn_retries=9).conn_retries == 9
    sentinel = redis_settings_from_url("redis+sentinel://h/m", conn_retries=2)
    assert sentinel.conn_retries == 2


def test_a_sentinel_url_gives_nodes_master_database_and_password() -> None:
    settings = redis_settings_from_url("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2")
    assert settings.sentinel is True
    assert settings.host == [("h1", 26379), ("h2", 26380)]
    assert settings.sentinel_master == "mymaster"
    assert settings.database == 2
    assert settings.password == "pw"
    assert settings.username is None


def test_sentinel_nodes_default_to_port_26379_and_db_may_be_a_query() -> None:
    settings = redis_settings_from_url("redis+sentinel://user:p%40ss@s1,s2:1234/primary?db=5")
    assert settings.host == [("s1", 26379), ("s2", 1234)]
    assert settings.sentinel_master == "primary"
    assert settings.database == 5
    assert (settings.username, settings.password) == ("user", "p@ss")


def test_a_sentinel_url_without_credentials_has_none() -> None:
    settings = redis_settings_from_url("redis+sentinel://s1:26379/primary")
    assert (settings.username, settings.password, settings.database) == (None, None, 0)


def test_a_sentinel_url_must_name_its_master() -> None:
    with pytest.raises(ValueError, match="names its master"):
        redis_settings_from_url("redis+sentinel://:pw@h1:26379")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:topsecret@cache.example:6380/3", "cache.example:6380 db=3 ssl=False"),
        ("rediss://user:topsecret@cache.example/1", "cache.example:6379 db=1 ssl=True"),
        ("unix:///run/redis.sock?db=2", "/run/redis.sock db=2"),
        ("redis+sentinel://:topsecret@h1:26379,h2:26380/mymaster/2", "db=2"),
        ("redis+sentinel://admin:topsecret@h1/mymaster", "db=0"),
    ],
)
def test_redacted_never_shows_the_password(url: str, shown: str) -> None:
    text = redacted(redis_settings_from_url(url))
    assert "topsecret" not in text
    assert "admin" not in text
    assert shown in text
