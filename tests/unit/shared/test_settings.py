"""Settings: env prefix per service, nesting with __, secrets kept secret, unknown keys refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.dispatch.settings import DispatchSettings
from services.intake.settings import IntakeSettings

BASE = {
    "INTAKE__DATABASE__URL": "postgresql://hazard:s3cret@127.0.0.1:55432/hazard",
    "INTAKE__KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:59092",
    "INTAKE__HTTP__PORT": "8101",
}


@pytest.fixture
def intake_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)


@pytest.mark.usefixtures("intake_env")
def test_nested_values_come_from_prefixed_environment() -> None:
    settings = IntakeSettings()  # type: ignore[call-arg]
    assert settings.http.port == 8101
    assert settings.kafka.bootstrap_servers == "127.0.0.1:59092"
    assert settings.kafka.idempotent_producer is True


@pytest.mark.usefixtures("intake_env")
def test_database_url_is_secret_and_normalised_to_asyncpg() -> None:
    settings = IntakeSettings()  # type: ignore[call-arg]
    assert "s3cret" not in repr(settings)
    assert (
        settings.database.url.get_secret_value()
        == "postgresql+asyncpg://hazard:s3cret@127.0.0.1:55432/hazard"
    )


@pytest.mark.usefixtures("intake_env")
def test_another_services_prefix_is_not_read() -> None:
    with pytest.raises(ValidationError) as info:
        DispatchSettings()  # type: ignore[call-arg]
    missing = {".".join(map(str, e["loc"])) for e in info.value.errors() if e["type"] == "missing"}
    assert missing == {"database", "kafka", "http"}


@pytest.mark.usefixtures("intake_env")
def test_unknown_nested_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE__KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        IntakeSettings()  # type: ignore[call-arg]


@pytest.mark.usefixtures("intake_env")
def test_non_postgres_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE__DATABASE__URL", "mysql://root@localhost/x")
    with pytest.raises(ValidationError, match=r"postgresql\+asyncpg://"):
        IntakeSettings()  # type: ignore[call-arg]


@pytest.mark.usefixtures("intake_env")
def test_inline_tokens_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "INTAKE__AUTH__TOKENS",
        '[{"token_sha256": "' + "a" * 64 + '", "principal": "ops", "role": "operator"}]',
    )
    settings = IntakeSettings()  # type: ignore[call-arg]
    assert [t.principal for t in settings.auth.tokens] == ["ops"]
