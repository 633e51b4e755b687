"""Every setting and argument check: each wrong value is named in one line that says how to fix it."""

import pytest

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.settings import (
    DefinitionSettings,
    RunSettings,
    base_url_for,
    check_campaign_id,
    int_setting,
    parse_campaign_list,
)

GOOD = {"WOLKVOX_BASE_URL": "http://127.0.0.1:8765", "WOLKVOX_TOKEN": "SECRET-x"}


def test_base_url_comes_from_the_server_nomenclature_or_an_explicit_url():
    assert base_url_for("0010") == "https://wv0010.wolkvox.com"
    assert base_url_for("0010", "http://127.0.0.1:9/") == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WOLKVOX_BASE_URL": ""}, "neither WOLKVOX_SERVER nor WOLKVOX_BASE_URL is set"),
        ({"WOLKVOX_BASE_URL": "", "WOLKVOX_SERVER": "12ab"}, "WOLKVOX_SERVER='12ab' is not a server nomenclature"),
        ({"WOLKVOX_BASE_URL": "", "WOLKVOX_SERVER": "evil.example.com/"}, "WOLKVOX_SERVER"),
        ({"WOLKVOX_BASE_URL": "wv0010.wolkvox.com"}, "WOLKVOX_BASE_URL='wv0010.wolkvox.com' is not a URL"),
        ({"WOLKVOX_TOKEN": ""}, "WOLKVOX_TOKEN is not set"),
        ({"WOLKVOX_TOKEN": "   "}, "WOLKVOX_TOKEN is not set"),
        ({"WOLKVOX_TIMEZONE": "Mars/Base"}, "WOLKVOX_TIMEZONE='Mars/Base' is not an IANA time zone"),
        ({"AMD_START_DATE": "yesterday"}, "AMD_START_DATE='yesterday' is not a date"),
        ({"WOLKVOX_CAMPAIGN_ALL": "maybe"}, "WOLKVOX_CAMPAIGN_ALL='maybe' is not one of auto, on, off"),
        ({"WOLKVOX_MAX_ATTEMPTS": "many"}, "WOLKVOX_MAX_ATTEMPTS='many' is not a whole number"),
        ({"WOLKVOX_MAX_ATTEMPTS": "2.5"}, "WOLKVOX_MAX_ATTEMPTS='2.5' is not a whole number"),
        ({"WOLKVOX_MAX_IN_FLIGHT": "3"}, "WOLKVOX_MAX_IN_FLIGHT=3 is out of range: use 1..2"),
        ({"AMD_BATCH_SIZE": "0"}, "AMD_BATCH_SIZE=0 is out of range"),
        ({"AMD_CAMPAIGNS": "20717,all"}, "AMD_CAMPAIGNS 'all' is not a campaign id"),
        ({"AMD_CAMPAIGNS": "20717,abc"}, "AMD_CAMPAIGNS 'abc' is not a campaign id"),
        ({"AMD_PUBLISHED_STORAGE_VERSION": "1.4"}, "AMD_PUBLISHED_STORAGE_VERSION='1.4' is not a DuckDB storage"),
        ({"AMD_PUBLISHED_STORAGE_VERSION": "v1.0.0'; DROP"}, "AMD_PUBLISHED_STORAGE_VERSION="),
        ({"AMD_PUBLISHED_PARQUET": "maybe"}, "AMD_PUBLISHED_PARQUET='maybe' is not a yes/no value"),
        ({"AMD_INTRADAY_KEEP_DAYS": "0"}, "AMD_INTRADAY_KEEP_DAYS=0 is out of range"),
    ],
)
def test_each_wrong_setting_is_named_in_one_line(env, named):
    with pytest.raises(SettingsError) as caught:
        RunSettings.from_env({**GOOD, **env})
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_settings_give_their_values_and_defaults():
    settings = RunSettings.from_env({**GOOD, "AMD_CAMPAIGNS": "101, 102,,101", "WOLKVOX_MAX_ATTEMPTS": "3"})
    assert settings.campaigns == ("101", "102")
    assert settings.numbers["WOLKVOX_MAX_ATTEMPTS"] == 3
    assert settings.numbers["AMD_BATCH_SIZE"] == 2500
    assert settings.definition == DefinitionSettings()


@pytest.mark.parametrize("text", ["all", "ALL", "abc", " 12", "12 ", "1,2", "١٢", "-5", ""])
def test_a_campaign_id_is_plain_ascii_digits(text):
    with pytest.raises(SettingsError, match="is not a campaign id"):
        check_campaign_id(text)


def test_all_is_explained_as_what_wolkvox_campaign_all_does():
    with pytest.raises(SettingsError, match="WOLKVOX_CAMPAIGN_ALL"):
        check_campaign_id("all")


def test_a_campaign_list_keeps_order_and_drops_duplicates():
    assert parse_campaign_list("101, 102,,103,101") == ["101", "102", "103"]
    assert check_campaign_id("20717") == "20717"


def test_an_unset_number_is_its_default():
    assert int_setting("WOLKVOX_MAX_ATTEMPTS", {}) == 6


def test_the_published_file_defaults_to_the_format_every_duckdb_from_1_0_opens():
    settings = RunSettings.from_env(GOOD)
    assert settings.publish.storage_version == "v1.0.0" and settings.publish.parquet is False
    chosen = RunSettings.from_env({**GOOD, "AMD_PUBLISHED_STORAGE_VERSION": "v1.4.0", "AMD_PUBLISHED_PARQUET": "1"})
    assert chosen.publish.storage_version == "v1.4.0" and chosen.publish.parquet is True


def test_every_setting_the_code_reads_is_declared_once_in_the_catalog():
    """Each AMD_/WOLKVOX_ variable the package reads has one declaration (default, range, secret or not)."""
    from amd_pipeline.core.settings import INT_SETTINGS, SETTINGS
    from amd_pipeline_tests.test_docs import names_read_by_the_code

    ours = {name for name in names_read_by_the_code() if not name.startswith("DAGSTER_")}
    assert ours - set(SETTINGS) == set()
    assert {name for name, s in SETTINGS.items() if s.secret} == {"WOLKVOX_TOKEN", "AMD_TOKEN_LOCK_URL"}
    assert all(SETTINGS[name].low <= default <= SETTINGS[name].high for name, (default, _, _) in INT_SETTINGS.items())
