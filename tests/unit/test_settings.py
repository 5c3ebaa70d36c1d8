"""Settings: defaults, environment parsing, clear refusals, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allot.errors import ConfigurationError
from allot.settings import Settings, load_settings, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_follow_the_design() -> None:
    settings = load_settings()
    assert settings.zk_root == "/default/allot"
    assert settings.zk_hosts == "127.0.0.1:2181"
    assert settings.bucket_count == 100
    assert settings.assign_interval == 30.0
    assert settings.database_url == "sqlite:///var/allot.db"
    assert settings.celery_result_backend == settings.broker_url


def test_environment_overrides_with_the_allot_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOT_CLUSTER", "prod")
    monkeypatch.setenv("ALLOT_NODE_OFFLINE_TIMEOUT", "2.5")
    monkeypatch.setenv("ALLOT_NODE_KEY", "node1@host")
    settings = load_settings()
    assert settings.zk_root == "/prod/allot"
    assert settings.node_offline_timeout == 2.5
    assert settings.node_key == "node1@host"


def test_history_is_kept_in_days_with_fractions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().run_history_days, load_settings().plan_history_days) == (7, 30)
    monkeypatch.setenv("ALLOT_RUN_HISTORY_DAYS", "0.5")
    assert load_settings().run_history_days == 0.5


def test_an_explicit_root_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOT_ZK_ROOT", "/default/amoro/ams")
    assert load_settings().zk_root == "/default/amoro/ams"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALLOT_BUCKET_COUNT", "0"),
        ("ALLOT_NODE_WEIGHT", "-1"),
        ("ALLOT_NODE_KEY", "a/b"),
        ("ALLOT_ZK_ROOT", "relative/path"),
        ("ALLOT_ZK_AUTH", "no-colon"),
        ("ALLOT_ZK_SESSION_TIMEOUT", "soon"),
        ("ALLOT_STRATEGY", "random"),
        ("ALLOT_RUN_HISTORY_DAYS", "0"),
        ("ALLOT_PLAN_HISTORY_DAYS", "-1"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=f"invalid setting {name}"):
        load_settings()


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_the_readme_settings_table_is_generated_from_the_settings() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.S
    )
    assert match is not None, "README.md lost its settings-table markers"
    assert match.group(1) == settings_table(), "run `python -m allot.settings` and paste the table"
