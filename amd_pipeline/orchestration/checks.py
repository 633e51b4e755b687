"""Asset checks on amd_daily: they read the DuckDB file read-only for milliseconds, after each load."""

import datetime as dt
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.schema import AMD_DAILY
from amd_pipeline.core.settings import DEFAULT_OPERATION, DefinitionSettings, check_campaign_id
from amd_pipeline.core.store import AmdStore
from amd_pipeline.core.views import UNUSUAL_MIN_HISTORY, UNUSUAL_THRESHOLD, VIEWS
from amd_pipeline.orchestration.partitions import CAMPAIGN_DIMENSION
from amd_pipeline.orchestration.resources import AmdStoreResource

if TYPE_CHECKING:
    from amd_pipeline.orchestration.component import WolkvoxOperation

SHOWN = 50  # missing campaign-days listed in the check's metadata
UNUSUAL_RECENT_DAYS = 56  # the check lists unusual days of the last 8 weeks; the view keeps them all


def _table_exists(store: AmdStore) -> bool:
    if not store.path.exists():
        return False
    return AMD_DAILY.name in set(store.query("SELECT table_name FROM duckdb_tables()").table_name)


CHECKS = {
    "amd_daily_totals_non_negative": "No total_amd is negative.",
    "amd_daily_one_row_per_key": "One row per campaign and window, and per campaign and local date "
    "(no day counted twice).",
    "amd_daily_complete": "Every campaign partition has a row for every day since AMD_START_DATE "
    "(WARN lists the gaps).",
    "amd_daily_unusual_days": f"No closed day of the last {UNUSUAL_RECENT_DAYS} days lies more than "
    f"{UNUSUAL_THRESHOLD} robust deviations from the median of the campaign's last 8 final days on the same "
    f"weekday (needs {UNUSUAL_MIN_HISTORY} of them; WARN lists them; view amd_unusual_days).",
}


def build_checks(asset: dg.AssetsDefinition, op: "WolkvoxOperation") -> list[dg.AssetChecksDefinition]:
    """The :data:`CHECKS` on the operation's ``amd_daily`` (its rows only), in one step.

    One step, not four: each check step that reports on a partitioned asset makes Dagster list every partition
    of the asset (``data_version_cache.py``), so one step lists them once (docs/performance.md, "Speed").
    ``can_subset`` keeps each check runnable on its own in the UI.
    """
    specs = [dg.AssetCheckSpec(name, asset=asset, description=text) for name, text in CHECKS.items()]
    settings = op.definition_settings()

    @dg.multi_asset_check(specs=specs, can_subset=True, name=op.name("amd_daily_checks"))
    def amd_daily_checks(context: dg.AssetCheckExecutionContext, amd_store: AmdStoreResource):
        store = amd_store.store(operation=op.id)
        exists = _table_exists(store)
        today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
        run = {
            "amd_daily_totals_non_negative": lambda: totals_non_negative(store, exists),
            "amd_daily_one_row_per_key": lambda: one_row_per_key(store, exists),
            "amd_daily_complete": lambda: complete(store, exists, context.instance, settings, today, op.campaigns_name),
            "amd_daily_unusual_days": lambda: unusual_days_result(store, today),
        }
        for key in sorted(context.selected_asset_check_keys, key=lambda k: list(CHECKS).index(k.name)):
            result = run[key.name]()
            yield dg.AssetCheckResult(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=result.passed,
                severity=result.severity,
                metadata=result.metadata,
            )

    return [amd_daily_checks]


def totals_non_negative(store: AmdStore, exists: bool) -> dg.AssetCheckResult:
    """Pass when no ``total_amd`` of the operation is negative; the metadata counts the negative rows."""
    if not exists:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0})
    bad = int(
        store.query(
            f"SELECT count(*) AS n FROM {AMD_DAILY.name} WHERE operation = ? AND total_amd < 0", [store.operation]
        ).n[0]
    )
    return dg.AssetCheckResult(passed=bad == 0, metadata={"negative_rows": bad})


def one_row_per_key(store: AmdStore, exists: bool) -> dg.AssetCheckResult:
    """Pass when no campaign has two rows for one window or for one local date; the metadata counts the extras."""
    if not exists:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0})
    counts = store.query(
        f"SELECT count(*) AS n_rows, count(DISTINCT (campaign_id, window_start)) AS n_windows, "
        f"count(DISTINCT (campaign_id, local_date)) AS n_days FROM {AMD_DAILY.name} WHERE operation = ?",
        [store.operation],
    ).iloc[0]
    doubled = int(counts.n_rows - min(counts.n_windows, counts.n_days))
    return dg.AssetCheckResult(
        passed=doubled == 0, metadata={"rows": int(counts.n_rows), "rows_doubling_a_key": doubled}
    )


def complete(
    store: AmdStore,
    exists: bool,
    instance: dg.DagsterInstance,
    settings: DefinitionSettings,
    today: dt.date,
    partitions: str = CAMPAIGN_DIMENSION,
) -> dg.AssetCheckResult:
    """WARN unless every campaign partition has a row for every day from the start date to ``today``.

    The metadata lists the first missing campaign-days and the ``amd-pipeline backfill`` command that fills them.
    """
    campaigns = []
    for campaign in instance.get_dynamic_partitions(partitions):
        try:
            campaigns.append(check_campaign_id(campaign))
        except SettingsError:
            continue
    expected = len(campaigns) * ((today - settings.start_date).days + 1)
    if exists and campaigns:
        missing = store.query(
            f"""
            SELECT c.campaign_id, d::DATE AS local_date
            FROM unnest(?::VARCHAR[]) AS c(campaign_id),
                 generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) AS g(d)
            WHERE NOT EXISTS (
                SELECT 1 FROM {AMD_DAILY.name} t
                WHERE t.operation = ? AND t.campaign_id = c.campaign_id AND t.local_date = d::DATE
            )
            ORDER BY local_date DESC, campaign_id
            """,
            [campaigns, settings.start_date, today, store.operation],
        )
        gaps = [(r.campaign_id, r.local_date.date()) for r in missing.itertuples()]
    else:
        gaps = [
            (c, today - dt.timedelta(days=i)) for i in range((today - settings.start_date).days + 1) for c in campaigns
        ]
    listed = "\n".join(f"- {c} {d}" for c, d in gaps[:SHOWN])
    more = f"\n- ... and {len(gaps) - SHOWN} more" if len(gaps) > SHOWN else ""
    metadata = {"expected_campaign_days": expected, "missing_campaign_days": len(gaps)}
    if gaps:
        first, last = min(d for _, d in gaps), max(d for _, d in gaps)
        metadata["missing"] = dg.MetadataValue.md(listed + more)
        option = "" if store.operation == DEFAULT_OPERATION else f" --operation {store.operation}"
        metadata["backfill"] = f"amd-pipeline backfill{option} --start {first} --end {last}"
    return dg.AssetCheckResult(passed=not gaps, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


def unusual_days_result(store: AmdStore, today: dt.date) -> dg.AssetCheckResult:
    """The unusual-days check on ``store``: WARN listing the closed days of the last 8 weeks the view flags.

    The view's rule is computed from the tables, so a working file whose views predate it is judged the same way.
    """
    if not _table_exists(store):
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, metadata={"unusual_days": 0})
    found = store.query(
        f"SELECT campaign_id, local_date, total_amd, usual_total_amd, score, direction "
        f"FROM ({VIEWS['amd_unusual_days']}) WHERE operation = ? AND local_date > ?::DATE - {UNUSUAL_RECENT_DAYS} "
        "ORDER BY local_date DESC, campaign_id",
        [store.operation, today],
    )
    metadata: dict[str, dg.MetadataValue | int] = {"unusual_days": len(found)}
    if len(found):
        lines = ["| campaign | day | total_amd | usual | score |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {r.campaign_id} | {r.local_date.date()} | {r.total_amd} | {r.usual_total_amd:g} | {r.score:+g} |"
            for r in found.head(SHOWN).itertuples()
        ]
        if len(found) > SHOWN:
            lines.append(f"| ... and {len(found) - SHOWN} more | | | | |")
        metadata["unusual"] = dg.MetadataValue.md("\n".join(lines))
    return dg.AssetCheckResult(passed=found.empty, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
