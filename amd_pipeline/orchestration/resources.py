"""Dagster resources: configuration only. They build the client, the store and the campaign list."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from amd_pipeline.core.budget import Budget, CallLedger
from amd_pipeline.core.campaigns import discover_campaign_ids
from amd_pipeline.core.errors import SettingsError, SharedStateError
from amd_pipeline.core.plan import CampaignAll
from amd_pipeline.core.schema import attempts_frame
from amd_pipeline.core.settings import (
    DEFAULT_OPERATION,
    INT_SETTINGS,
    PublishSettings,
    about,
    base_url_for,
    check_campaign_all,
    check_flag,
    check_share,
    check_storage_version,
    check_token,
    default,
    parquet_dir_for,
    parse_campaign_list,
    working_path_for,
)
from amd_pipeline.core.shared_state import PgCallLedger
from amd_pipeline.core.store import AmdStore
from amd_pipeline.core.token_guard import TokenGuard, token_key
from amd_pipeline.wolkvox import errors
from amd_pipeline.wolkvox.client import RetryPolicy, Timeouts, WolkvoxClient
from amd_pipeline.wolkvox.errors import WolkvoxError

ALL_REFUSED = "campaign_all_refused_at"


class WolkvoxResource(dg.ConfigurableResource):
    """The Wolkvox API for one operation. Give the token as ``dg.EnvVar``, never as a string."""

    token: str = Field(default="", description=about("WOLKVOX_TOKEN"))
    token_env: str = Field(default="WOLKVOX_TOKEN", description="The variable the token comes from (for messages).")
    server: str = Field(default="", description=about("WOLKVOX_SERVER"))
    base_url: str = Field(default="", description=about("WOLKVOX_BASE_URL"))
    connect_timeout_seconds: int = Field(
        default=default("WOLKVOX_CONNECT_TIMEOUT_SECONDS"), description=about("WOLKVOX_CONNECT_TIMEOUT_SECONDS")
    )
    read_timeout_seconds: int = Field(
        default=default("WOLKVOX_READ_TIMEOUT_SECONDS"), description=about("WOLKVOX_READ_TIMEOUT_SECONDS")
    )
    max_attempts: int = Field(default=default("WOLKVOX_MAX_ATTEMPTS"), description=about("WOLKVOX_MAX_ATTEMPTS"))
    backoff_base_ms: int = Field(
        default=default("WOLKVOX_BACKOFF_BASE_MS"), description=about("WOLKVOX_BACKOFF_BASE_MS")
    )
    backoff_max_seconds: int = int(RetryPolicy.max_delay)
    maintenance_delay_ms: int = Field(
        default=default("WOLKVOX_MAINTENANCE_DELAY_MS"), description=about("WOLKVOX_MAINTENANCE_DELAY_MS")
    )
    max_in_flight: int = Field(default=default("WOLKVOX_MAX_IN_FLIGHT"), description=about("WOLKVOX_MAX_IN_FLIGHT"))
    lock_dir: str = Field(default=default("AMD_LOCK_DIR"), description=about("AMD_LOCK_DIR"))
    token_lock_url: str = Field(default=default("AMD_TOKEN_LOCK_URL"), description=about("AMD_TOKEN_LOCK_URL"))
    campaign_all: str = Field(default=default("WOLKVOX_CAMPAIGN_ALL"), description=about("WOLKVOX_CAMPAIGN_ALL"))
    daily_quota: int = Field(default=default("WOLKVOX_DAILY_QUOTA"), description=about("WOLKVOX_DAILY_QUOTA"))
    quota_share: str = Field(default=default("AMD_QUOTA_SHARE"), description=about("AMD_QUOTA_SHARE"))
    timezone: str = Field(default=default("WOLKVOX_TIMEZONE"), description=about("WOLKVOX_TIMEZONE"))
    _instance_url: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Share the token's state through the instance's PostgreSQL when it has one.

        Runs, sensors, schedules and the CLI's ``build_resources(instance=...)`` then see one budget and one lock.
        """
        from amd_pipeline.core.shared_state import instance_url

        self._instance_url = instance_url(context.instance)

    def shared_url(self) -> str | None:
        """Where the call ledger, the learned facts and the cross-machine lock live (None: files on this machine).

        AMD_TOKEN_LOCK_URL if set, else the Dagster instance's PostgreSQL (production profile), else None.
        """
        return self.token_lock_url or self._instance_url or None

    def url(self) -> str:
        """The checked base URL. Raises :class:`SettingsError` naming what to set."""
        return base_url_for(self.server.strip(), self.base_url)

    def check(self) -> None:
        """Raise :class:`SettingsError` for the first setting a call would trip on (nothing is called)."""
        check_token(self.token, self.token_env)
        self.url()
        check_campaign_all(self.campaign_all)
        check_share(self.quota_share)
        for name, value in (("WOLKVOX_MAX_IN_FLIGHT", self.max_in_flight), ("WOLKVOX_MAX_ATTEMPTS", self.max_attempts)):
            _, low, high = INT_SETTINGS[name]
            if not low <= value <= high:
                raise SettingsError(f"{name}={value} is out of range: use {low}..{high}")

    def campaign_all_mode(self) -> CampaignAll:
        """The configured mode, or ``off`` when ``auto`` already learned that the server refuses ``all``."""
        mode = CampaignAll(check_campaign_all(self.campaign_all))
        if mode == CampaignAll.AUTO and self.guard().state().get(ALL_REFUSED):
            return CampaignAll.OFF
        return mode

    def remember_all_refused(self) -> None:
        """Record in the token's shared state that the server refused ``campaign_id=all`` (and when)."""
        self.guard().state().set(ALL_REFUSED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def guard(self) -> TokenGuard:
        """The token's guard (key, in-flight limit, lock folder, shared URL), once :meth:`check` passes."""
        self.check()
        return TokenGuard(
            token_key(self.url(), self.token),
            max_in_flight=self.max_in_flight,
            lock_dir=Path(self.lock_dir) if self.lock_dir else None,
            shared_url=self.shared_url(),
        )

    def ledger(self) -> CallLedger | PgCallLedger:
        """Today's calls with this token, per source.

        In the shared database when there is one (every process, machine and container), else in a file beside
        the lock files (this machine).
        """
        guard = self.guard()
        if guard.shared_url:
            return PgCallLedger(guard.shared_url, guard.key, self.timezone)
        return CallLedger(guard.lock_dir / f"{guard.key}.calls.json", self.timezone)

    def budget(self, ledger: CallLedger | PgCallLedger | None = None) -> Budget:
        """The daily call budget as far as it is known without a call."""
        quota = self.daily_quota or (ledger or self.ledger()).token_limit()
        return Budget(quota or None, check_share(self.quota_share))

    @contextlib.contextmanager
    def client(self, source: str = "cli") -> Iterator[WolkvoxClient]:
        """A client whose every HTTP attempt holds the token lease and is counted against the daily budget.

        When ``WOLKVOX_DAILY_QUOTA`` is unset and ``token_info`` was not asked today, the client asks it
        first (one call, counted) and remembers the token's limit for the rest of the day.
        """
        self.check()
        ledger = self.ledger()
        limit: list[int | None] = [None]
        client = WolkvoxClient(
            self.url(),
            self.token,
            timeouts=Timeouts(self.connect_timeout_seconds, self.read_timeout_seconds),
            retry=RetryPolicy(
                max_attempts=self.max_attempts,
                base_delay=self.backoff_base_ms / 1000,
                max_delay=self.backoff_max_seconds,
                maintenance_delay=self.maintenance_delay_ms / 1000,
            ),
            lease=self.guard().lease,
            before_call=lambda: ledger.charge(source, limit[0]),
            token_env=self.token_env,
        )
        budget = self.budget(ledger)
        if budget.daily_quota is None:
            try:
                client.token_info_today = client.token_info()
            except (errors.FatalError, errors.TransportError, errors.QuotaExhaustedError, SharedStateError):
                client.close()
                raise  # the token or the host is wrong, or the quota is gone: no load can work
            except WolkvoxError:
                pass  # token_info unusable: no budget known, the vendor's own quota still stops the load
            else:
                ledger.remember_token_limit(client.token_info_today["token_limit"])
                budget = self.budget(ledger)
        limit[0] = budget.limit
        try:
            yield client
        finally:
            client.close()


class AmdStoreResource(dg.ConfigurableResource):
    """The DuckDB files: the one loads write, and the copy analysts read that every load publishes."""

    path: str = Field(default=default("AMD_DUCKDB_PATH"), description=about("AMD_DUCKDB_PATH"))
    working_path: str = Field(default=default("AMD_WORKING_DUCKDB_PATH"), description=about("AMD_WORKING_DUCKDB_PATH"))
    lock_timeout_seconds: int = Field(
        default=default("AMD_DUCKDB_LOCK_TIMEOUT_SECONDS"), description=about("AMD_DUCKDB_LOCK_TIMEOUT_SECONDS")
    )
    batch_size: int = Field(default=default("AMD_BATCH_SIZE"), description=about("AMD_BATCH_SIZE"))
    published_storage_version: str = Field(
        default=default("AMD_PUBLISHED_STORAGE_VERSION"), description=about("AMD_PUBLISHED_STORAGE_VERSION")
    )
    published_parquet: str = Field(default=default("AMD_PUBLISHED_PARQUET"), description=about("AMD_PUBLISHED_PARQUET"))
    intraday_keep_days: int = Field(
        default=default("AMD_INTRADAY_KEEP_DAYS"), description=about("AMD_INTRADAY_KEEP_DAYS")
    )

    def store(
        self, timezone: str | None = None, start_date: dt.date | None = None, *, operation: str = DEFAULT_OPERATION
    ) -> AmdStore:
        """The working store, writing and reading ``operation``'s rows.

        With ``timezone``, writes refuse an operation whose days the file holds in another zone.
        """
        return AmdStore(
            working_path_for(self.path, self.working_path),
            operation=operation,
            timezone=timezone,
            start_date=start_date,
            lock_timeout=self.lock_timeout_seconds,
            intraday_keep_days=self.intraday_keep_days,
        )

    def publish_settings(self) -> PublishSettings:
        """The published file's format and Parquet copy, checked (:class:`SettingsError` names a wrong one)."""
        return PublishSettings(
            storage_version=check_storage_version(self.published_storage_version),
            parquet=check_flag(self.published_parquet, "AMD_PUBLISHED_PARQUET"),
        )

    def publish(self, working: AmdStore, *, target: str | None = None, operation: str | None = None):
        """Publish ``working`` at :attr:`path` (or ``target``) as the settings ask (format, Parquet copy).

        ``target`` is an operation's own file, holding ``operation`` alone.
        """
        options = self.publish_settings()
        if target and Path(target).resolve() in (Path(self.path).resolve(), working.path.resolve()):
            raise SettingsError(
                f"published_path {target} of operation {operation} is the analysts' shared file (or the working "
                "file): give the operation a file of its own, e.g. data/<operation>.duckdb"
            )
        target = target or self.path
        return working.publish(
            target,
            storage_version=options.storage_version,
            parquet_dir=parquet_dir_for(target) if options.parquet else None,
            operation=operation,
        )


class CampaignSource(dg.ConfigurableResource):
    """Which campaigns are partitions: AMD_CAMPAIGNS if set, else discovery of predictive campaigns."""

    campaign_ids: str = Field(default=default("AMD_CAMPAIGNS"), description=about("AMD_CAMPAIGNS"))
    discover_types: str = Field(default="predictive", description="type_campaign values that discovery keeps.")

    def configured(self) -> list[str]:
        """The campaign ids set in ``campaign_ids`` (AMD_CAMPAIGNS); empty when discovery picks them."""
        return parse_campaign_list(self.campaign_ids)

    def listing(self, wolkvox: WolkvoxResource, source: str = "cli", client: WolkvoxClient | None = None) -> list[dict]:
        """The operation's whole campaign list (one API call), with ``client`` if given."""
        if client is not None:
            return list(client.campaigns())
        with wolkvox.client(source) as own:
            return list(own.campaigns())

    def kept(self, rows: list[dict]) -> list[str]:
        """The ids of the listed campaigns of the kept types."""
        return discover_campaign_ids(rows, [t for t in self.discover_types.split(",") if t.strip()])

    def discover(self, wolkvox: WolkvoxResource, source: str = "cli", store: AmdStore | None = None) -> list[str]:
        """The operation's campaigns of the kept types (one API call).

        ``store`` keeps the whole list, and the call in ``api_requests`` (the table counts every call, as the budget
        does).
        """
        with wolkvox.client(source) as client:
            try:
                rows = self.listing(wolkvox, source, client)
            finally:
                if store is not None and client.attempts:
                    store.record_requests(attempts_frame(client.attempts, {"source": source, "run_id": None}))
        if store is not None:
            store.record_campaigns(rows, dt.datetime.now(dt.UTC))
        return self.kept(rows)

    def resolve(self, wolkvox: WolkvoxResource, source: str = "cli", store: AmdStore | None = None) -> list[str]:
        """The configured campaigns, else the discovered ones (one API call)."""
        return self.configured() or self.discover(wolkvox, source, store)
