"""Several operations in one code location: the WolkvoxOperation component, its names, its checks, and
what the location builds from operation folders (tested as Dagster tests components: a defs-folder
sandbox, the component tree)."""

from __future__ import annotations

import pickle
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.orchestration.component import WolkvoxOperation
from amd_pipeline.orchestration.location import build_location
from amd_pipeline.orchestration.operations import load_operations


def write_operation(folder: Path, name: str, **attributes) -> Path:
    """``<folder>/<name>/defs.yaml`` as a person writes it (or `dg scaffold defs` does)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    path = folder / name / "defs.yaml"
    path.write_text(yaml.safe_dump({"type": "amd_pipeline.WolkvoxOperation", "attributes": attributes}))
    return path


def two_operations(folder: Path) -> Path:
    write_operation(
        folder,
        "acme_bog",
        id="acme_bog",
        server="0010",
        token_env="WOLKVOX_TOKEN_ACME",
        timezone="America/Bogota",
        start_date="2026-01-01",
    )
    write_operation(
        folder,
        "beta_mex",
        id="beta_mex",
        base_url="http://127.0.0.1:9",
        token_env="WOLKVOX_TOKEN_BETA",
        timezone="America/Mexico_City",
        campaigns=["20717", "20718"],
    )
    return folder


def test_dg_scaffold_writes_the_operation_folder_and_it_builds_the_operations_definitions():
    with create_defs_folder_sandbox() as sandbox:
        defs_path = sandbox.scaffold_component(
            WolkvoxOperation,
            defs_path="acme_bog",
            scaffold_params={"server": "0010", "token_env": "WOLKVOX_TOKEN_ACME", "timezone": "America/Bogota"},
        )
        written = yaml.safe_load((defs_path / "defs.yaml").read_text())
        assert written["attributes"] == {
            "id": "acme_bog",
            "server": "0010",
            "token_env": "WOLKVOX_TOKEN_ACME",
            "timezone": "America/Bogota",
            "start_date": "2025-01-01",
        }
        assert written["requirements"] == {"env": ["WOLKVOX_TOKEN_ACME"]}  # dg checks the variable is set
        with sandbox.load_component_and_build_defs(defs_path=defs_path) as (component, defs):
            assert isinstance(component, WolkvoxOperation)
            asset = defs.resolve_assets_def(dg.AssetKey(["acme_bog", "amd_daily"]))
            assert asset.group_names_by_key[asset.key] == "acme_bog"
            assert asset.op.pool == "wolkvox_token__wolkvox_token_acme"
            campaign = asset.partitions_def.get_partitions_def_for_dimension("campaign")
            assert campaign.name == "acme_bog__campaign"
            assert {s.name for s in defs.schedules} == {"acme_bog__amd_daily_refresh", "acme_bog__amd_daily_restate"}
            assert [s.name for s in defs.sensors] == ["acme_bog__campaign_partitions"]
            assert defs.resolve_job_def("acme_bog__amd_daily_job").tags["amd_pipeline/operation"] == "acme_bog"
            checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
            assert "amd_daily_complete" in checks


def test_two_operation_folders_make_two_sets_of_assets_and_one_analysts_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AMD_OPERATIONS_DIR", str(two_operations(tmp_path / "ops")))
    defs = build_location()
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"acme_bog/amd_daily", "beta_mex/amd_daily", "amd_published"}
    published = defs.resolve_assets_def(dg.AssetKey("amd_published"))
    assert set(published.asset_deps[published.key]) == {
        dg.AssetKey(["acme_bog", "amd_daily"]),
        dg.AssetKey(["beta_mex", "amd_daily"]),
    }
    days = {
        key: defs.resolve_assets_def(key).partitions_def.get_partitions_def_for_dimension("day")
        for key in (dg.AssetKey(["acme_bog", "amd_daily"]), dg.AssetKey(["beta_mex", "amd_daily"]))
    }
    assert {str(d.timezone) for d in days.values()} == {"America/Bogota", "America/Mexico_City"}
    schedules = sorted(s.name for s in defs.schedules)
    assert schedules == [
        "acme_bog__amd_daily_refresh",
        "acme_bog__amd_daily_restate",
        "amd_instance_cleanup",
        "beta_mex__amd_daily_refresh",
        "beta_mex__amd_daily_restate",
    ]
    assert {"acme_bog__wolkvox", "beta_mex__wolkvox", "amd_store"} <= set(defs.resources)
    assert defs.resources["beta_mex__campaign_source"].campaign_ids == "20717,20718"


def test_no_operation_folder_keeps_the_single_operation_names_so_old_history_stays_readable(tmp_path, monkeypatch):
    monkeypatch.setenv("AMD_OPERATIONS_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    defs = build_location()
    asset = defs.resolve_assets_def(dg.AssetKey("amd_daily"))
    assert asset.op.pool == "wolkvox_token"
    assert asset.partitions_def.get_partitions_def_for_dimension("campaign").name == "campaign"
    assert {s.name for s in defs.schedules} == {"amd_daily_refresh", "amd_daily_restate", "amd_instance_cleanup"}
    assert [s.name for s in defs.sensors] == ["campaign_partitions"]
    assert "wolkvox" in defs.get_repository_def().get_top_level_resources()


def test_two_operations_cannot_share_one_own_file(tmp_path):
    write_operation(tmp_path, "a", id="a", server="0010", token_env="T_A", published_path="client.duckdb")
    second = write_operation(tmp_path, "b", id="b", server="0011", token_env="T_B", published_path="client.duckdb")
    with pytest.raises(SettingsError) as raised:
        load_operations({"AMD_OPERATIONS_DIR": str(tmp_path)})
    assert str(raised.value).startswith(f"{second}: published_path client.duckdb is already a's own file")


def test_operations_that_share_a_token_variable_share_its_pool(tmp_path):
    folder = tmp_path / "ops"
    write_operation(folder, "a", id="a", server="0010", token_env="WOLKVOX_TOKEN_SHARED")
    write_operation(folder, "b", id="b", server="0010", token_env="WOLKVOX_TOKEN_SHARED")
    write_operation(folder, "c", id="c", server="0011", token_env="WOLKVOX_TOKEN_C")
    found = load_operations({"AMD_OPERATIONS_DIR": str(folder)})
    assert [op.pool for op in found.operations] == [
        "wolkvox_token__wolkvox_token_shared",
        "wolkvox_token__wolkvox_token_shared",
        "wolkvox_token__wolkvox_token_c",
    ]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"timezone": "America/Bogot"}, "timezone='America/Bogot' is not an IANA time zone"),
        ({"token_env": None}, "token_env is missing"),
        ({"token_env": "abc-def"}, "token_env 'abc-def' is not an environment variable's name"),
        ({"id": "Acme Bog"}, "id 'Acme Bog' is not an operation id"),
        ({"server": "wv10"}, "server='wv10' is not a server nomenclature"),
        ({"start_date": "2025-13-01"}, "start_date '2025-13-01' is not a date"),
        ({"campaigns": ["20717", "all"]}, "campaigns 'all' is not a campaign id"),
        ({"quota_share": 2}, "quota_share=2 is out of range"),
        ({"restate_days": 40}, "restate_days=40 is out of range: use 1..31"),
        ({"refresh_cron": "every 5"}, "refresh_cron='every 5' is not a cron expression"),
    ],
)
def test_a_bad_defs_yaml_is_one_line_naming_the_file_and_the_field(tmp_path, attributes, expected):
    base = {"id": "acme_bog", "server": "0010", "token_env": "WOLKVOX_TOKEN_ACME", "timezone": "America/Bogota"}
    base.update(attributes)
    path = write_operation(tmp_path, "acme_bog", **{k: v for k, v in base.items() if v is not None})
    with pytest.raises(SettingsError) as raised:
        load_operations({"AMD_OPERATIONS_DIR": str(tmp_path)})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_a_defs_yaml_that_is_not_yaml_is_one_line_naming_the_file_and_the_line(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "defs.yaml").write_text(
        'type: amd_pipeline.WolkvoxOperation\nattributes:\n  id: x\n  server: "0010\n  token_env: T\n'
    )
    with pytest.raises(SettingsError) as raised:
        load_operations({"AMD_OPERATIONS_DIR": str(tmp_path)})
    assert str(raised.value) == (
        f"{tmp_path / 'x' / 'defs.yaml'}: line 4: while scanning a quoted scalar, found unexpected end of stream"
    )


def test_two_folders_with_one_id_are_refused_naming_both_files(tmp_path):
    first = write_operation(tmp_path, "a", id="acme", server="0010", token_env="T_A")
    second = write_operation(tmp_path, "b", id="acme", server="0011", token_env="T_B")
    with pytest.raises(SettingsError, match="already the id of") as raised:
        load_operations({"AMD_OPERATIONS_DIR": str(tmp_path)})
    assert str(second) in str(raised.value) and str(first) in str(raised.value)


def test_the_token_is_read_at_launch_and_never_in_the_definitions(tmp_path, monkeypatch, token):
    monkeypatch.setenv("AMD_OPERATIONS_DIR", str(two_operations(tmp_path / "ops")))
    monkeypatch.setenv("WOLKVOX_TOKEN_ACME", token)
    defs = build_location()
    assert token not in repr(defs.resources["acme_bog__wolkvox"])
    from dagster._core.remote_representation.external_data import RepositorySnap

    snapshot = RepositorySnap.from_def(defs.get_repository_def())
    assert token.encode() not in pickle.dumps(snapshot)


def test_operation_requires_choosing_when_there_are_several(tmp_path):
    found = load_operations({"AMD_OPERATIONS_DIR": str(two_operations(tmp_path))})
    with pytest.raises(SettingsError, match=r"2 operations \(acme_bog, beta_mex\): pass --operation ID"):
        found.get(None)
    with pytest.raises(SettingsError, match="is not one of the operations"):
        found.get("gamma")
    assert found.get("beta_mex").timezone == "America/Mexico_City"


def test_a_folder_operations_defaults_and_the_resources_defaults_are_the_settings_declared_ones():
    """An operation's field, a resource's field and the environment variable default alike (core.settings)."""
    from amd_pipeline.core.settings import default
    from amd_pipeline.orchestration.build import MACHINE_FIELDS, OPERATION_FIELDS, STORE_FIELDS
    from amd_pipeline.orchestration.resources import AmdStoreResource, WolkvoxResource

    def differ(model, fields):
        return {
            field: (model.model_fields[field].default, default(setting))
            for field, setting in fields.items()
            if str(model.model_fields[field].default) != str(default(setting))
        }

    assert differ(WolkvoxOperation, OPERATION_FIELDS) == {}
    assert differ(WolkvoxResource, {**OPERATION_FIELDS, **MACHINE_FIELDS}) == {}
    assert differ(AmdStoreResource, STORE_FIELDS) == {}
