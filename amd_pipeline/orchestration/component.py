"""One Wolkvox operation as a Dagster component: its settings (the model's fields) and its objects' names.

A BPO runs one Wolkvox operation per client (its own server, token, quota, time zone and campaigns), each a folder
with a ``defs.yaml`` (``dg scaffold defs amd_pipeline.WolkvoxOperation <id>``). The fields are the one place an
operation's settings are declared, with defaults and checks; the single-operation environment variables map onto
the same model as the operation ``default`` (:meth:`WolkvoxOperation.from_env`). ``default`` keeps the names from
before operations (``amd_daily``, the ``campaign`` partitions, the ``wolkvox_token`` pool), so an old instance keeps
its history; another operation's objects are named for it (``acme_bog/amd_daily``, the ``acme_bog__`` prefix).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import Literal

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.core.settings import (
    DEFAULT_OPERATION,
    DEFAULT_REFRESH_CRON,
    DEFAULT_RESTATE_CRON,
    DEFAULT_RESTATE_DAYS,
    DEFAULT_START_DATE,
    DEFAULT_TIMEZONE,
    INT_SETTINGS,
    DefinitionSettings,
    RunSettings,
    base_url_for,
    check_campaign_id,
    check_cron,
    check_share,
    check_timezone,
    check_token,
    default,
)

DEFAULT_TOKEN_ENV = "WOLKVOX_TOKEN"
_ID = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# The single-operation variables a shared check names, as a defs.yaml calls them.
_FIELD_NAMES = {
    "WOLKVOX_BASE_URL": "base_url",
    "WOLKVOX_SERVER": "server",
    "WOLKVOX_CAMPAIGN_ALL": "campaign_all",
    "AMD_QUOTA_SHARE": "quota_share",
}


def _checked(check, *args):
    """Run a settings check as pydantic wants it: a SettingsError becomes a ValueError with the same sentence.

    The sentence names the defs.yaml field rather than the environment variable.
    """
    try:
        return check(*args)
    except SettingsError as exc:
        message = str(exc)
        for variable, field in _FIELD_NAMES.items():
            message = message.replace(variable, field)
        raise ValueError(message) from None


class OperationParams(BaseModel):
    """What ``dg scaffold defs amd_pipeline.WolkvoxOperation <id>`` takes (``--server``, ``--token-env``, ...).

    Everything else starts at its default in the written ``defs.yaml``.
    """

    server: str = Field(default="", description="Server nomenclature, e.g. 0010 (wv0010.wolkvox.com).")
    base_url: str = Field(default="", description="Explicit base URL instead of --server.")
    token_env: str = Field(default="", description="Name of the environment variable holding the token.")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="The operation's IANA time zone.")
    start_date: str = Field(default=DEFAULT_START_DATE.isoformat(), description="First day to load.")


class OperationScaffolder(dg.Scaffolder[OperationParams]):
    """Writes ``defs.yaml`` with the operation's id (its folder's name) and the given settings."""

    @classmethod
    def get_scaffold_params(cls) -> type[OperationParams]:
        """The options ``dg scaffold defs`` takes: :class:`OperationParams`."""
        return OperationParams

    def scaffold(self, request: dg.ScaffoldRequest[OperationParams]) -> None:
        """Write the folder's ``defs.yaml``: the id is the folder's name, the token's variable a requirement."""
        params = request.params
        op_id = request.target_path.name
        token_env = params.token_env or f"WOLKVOX_TOKEN_{op_id.upper()}"
        attributes = {"id": op_id}
        if params.base_url:
            attributes["base_url"] = params.base_url
        else:
            attributes["server"] = params.server or "0000"
        attributes |= {"token_env": token_env, "timezone": params.timezone, "start_date": params.start_date}
        dg.scaffold_component(request, attributes)
        with open(request.target_path / "defs.yaml", "a", encoding="utf-8") as f:
            # The token's variable, for `dg list envs`; its value never enters a file. Campaigns are
            # discovered unless listed (campaigns: [20717, 20731]).
            f.write(f"\nrequirements:\n  env:\n    - {token_env}\n")


@dg.scaffold_with(OperationScaffolder)
class WolkvoxOperation(dg.Component, dg.Model, dg.Resolvable):
    """One Wolkvox operation: its assets, checks, schedules and sensor, loading into the one analysts' file.

    The token is never in a file: ``token_env`` names the environment variable that holds it, read when
    a run uses it (``dg.EnvVar``). Operations that share a token share one lane: the token's pool, its
    lock, its daily ledger and budget (told apart by a keyed hash of the URL and token, never the text).
    """

    id: str = Field(description="Lower-case letters, digits and _; names the operation's assets, runs and rows.")
    server: str = Field(default="", description="Server nomenclature, e.g. 0010 for wv0010.wolkvox.com.")
    base_url: str = Field(default="", description="Explicit base URL; wins over server.")
    token_env: str = Field(description="Name of the environment variable that holds the operation's token.")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="The operation's IANA zone: its days and budget.")
    start_date: str = Field(default=DEFAULT_START_DATE.isoformat(), description="First day of the partitions.")
    campaigns: list[str | int] = Field(
        default_factory=list, description="Campaign ids, like [20717, 20731]; empty: discover predictive ones."
    )
    campaign_all: Literal["auto", "on", "off"] = Field(
        default=default("WOLKVOX_CAMPAIGN_ALL"), description="One campaign_id=all call per day."
    )
    daily_quota: int = Field(
        default=default("WOLKVOX_DAILY_QUOTA"), description="Calls per day (licenses x 1000); 0: ask token_info daily."
    )
    quota_share: float = Field(
        default=float(default("AMD_QUOTA_SHARE")),
        description="Share of the token's daily quota this operation may spend.",
    )
    max_in_flight: int = Field(
        default=default("WOLKVOX_MAX_IN_FLIGHT"), description="Requests in flight with the token, 1 or 2."
    )
    refresh_cron: str = Field(default=DEFAULT_REFRESH_CRON, description="When today is refreshed (its zone).")
    restate_cron: str = Field(default=DEFAULT_RESTATE_CRON, description="When recent closed days are refetched.")
    restate_days: int = Field(default=DEFAULT_RESTATE_DAYS, description="How many closed days a restatement covers.")
    published_path: str = Field(
        default="",
        description="Also publish this operation alone to this DuckDB file (nothing of another operation in it).",
    )

    # Set by from_env: the run-time settings stay environment variables resolved at launch, as before.
    _from_environment: bool = PrivateAttr(default=False)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError(f"id {value!r} is not an operation id: lower-case letters, digits and _, like acme_bog")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value or ""):
            raise ValueError(
                f"token_env {value!r} is not an environment variable's name: name the variable that holds the "
                "token, like WOLKVOX_TOKEN_ACME (never the token itself)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _checked(check_timezone, value, "timezone")

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date(cls, value) -> str:
        try:  # YAML reads 2025-01-01 as a date; a string must be one
            return value.isoformat() if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise ValueError(f"start_date {value!r} is not a date like 2025-01-01") from None

    @field_validator("campaigns")
    @classmethod
    def _campaigns(cls, value: list[str | int]) -> list[str]:
        return list(dict.fromkeys(_checked(check_campaign_id, str(c).strip(), "campaigns") for c in value))

    @field_validator("refresh_cron", "restate_cron")
    @classmethod
    def _cron(cls, value: str, info) -> str:
        return _checked(check_cron, value, info.field_name)

    @field_validator("quota_share")
    @classmethod
    def _share(cls, value: float) -> float:
        return _checked(check_share, str(value))

    @model_validator(mode="after")
    def _numbers_and_host(self) -> WolkvoxOperation:
        for field, setting in (
            ("daily_quota", "WOLKVOX_DAILY_QUOTA"),
            ("max_in_flight", "WOLKVOX_MAX_IN_FLIGHT"),
            ("restate_days", "AMD_RESTATE_DAYS"),
        ):
            _, low, high = INT_SETTINGS[setting]
            if not low <= getattr(self, field) <= high:
                raise ValueError(f"{field}={getattr(self, field)} is out of range: use {low}..{high}")
        _checked(base_url_for, self.server.strip(), self.base_url)
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WolkvoxOperation:
        """The single-operation setup, from the environment variables.

        ``WOLKVOX_TIMEZONE``, ``AMD_START_DATE`` and the crons shape the definitions now; the server, token,
        quota and campaigns stay environment variables read at launch.
        """
        return cls.from_settings(DefinitionSettings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: DefinitionSettings) -> WolkvoxOperation:
        """The env-defined operation from its checked definition settings (not checked again)."""
        operation = cls.model_construct(
            id=DEFAULT_OPERATION,
            token_env=DEFAULT_TOKEN_ENV,
            timezone=settings.timezone,
            start_date=settings.start_date.isoformat(),
            refresh_cron=settings.refresh_cron,
            restate_cron=settings.restate_cron,
            restate_days=settings.restate_days,
        )
        operation._from_environment = True  # noqa: SLF001 - the class's own private attribute, set in its classmethod
        return operation

    @property
    def from_environment(self) -> bool:
        """Defined by the environment variables (no ``defs.yaml``): its run-time settings are read at launch."""
        return self._from_environment

    def definition_settings(self) -> DefinitionSettings:
        """What shapes this operation's partitions and schedules, as the shared builders take it."""
        return DefinitionSettings(
            timezone=self.timezone,
            start_date=self.first_day,
            refresh_cron=self.refresh_cron,
            restate_cron=self.restate_cron,
            restate_days=self.restate_days,
        )

    def run_settings(self, environ: Mapping[str, str] | None = None) -> RunSettings:
        """Every setting a load of this operation needs, checked (the CLI's, before any call or write).

        The machine's come from the environment, the operation's from here (its token from ``token_env``).
        """
        if self.from_environment:
            return RunSettings.from_env(environ)
        env = os.environ if environ is None else environ
        shared = RunSettings.from_env(env, operation_from_env=False)
        check_token(env.get(self.token_env), self.token_env)
        return dataclasses.replace(
            shared,
            definition=self.definition_settings(),
            base_url=base_url_for(self.server.strip(), self.base_url),
            campaign_all=self.campaign_all,
            campaigns=tuple(self.campaigns),
            numbers={
                **shared.numbers,
                "WOLKVOX_DAILY_QUOTA": self.daily_quota,
                "WOLKVOX_MAX_IN_FLIGHT": self.max_in_flight,
                "AMD_RESTATE_DAYS": self.restate_days,
            },
            quota_share=self.quota_share,
        )

    @property
    def first_day(self) -> dt.date:
        """``start_date`` as a date: the first day of the partitions."""
        return dt.date.fromisoformat(self.start_date)

    # --- the names of this operation's Dagster objects -------------------------------------------------

    @property
    def is_default(self) -> bool:
        """True for the operation ``default``, whose objects keep the names from before operations."""
        return self.id == DEFAULT_OPERATION

    def name(self, base: str) -> str:
        """A job, schedule, sensor, check or partitions name: ``base`` for ``default``, else ``<id>__base``."""
        return base if self.is_default else f"{self.id}__{base}"

    @property
    def key_prefix(self) -> list[str]:
        """The asset key prefix: none for ``default``, else ``[id]``."""
        return [] if self.is_default else [self.id]

    def asset_key(self, name: str) -> dg.AssetKey:
        """The key of the operation's asset ``name`` (under :attr:`key_prefix`)."""
        return dg.AssetKey([*self.key_prefix, name])

    @property
    def group(self) -> str:
        """The operation's asset group: ``wolkvox`` for ``default``, else its id."""
        return "wolkvox" if self.is_default else self.id

    @property
    def campaigns_name(self) -> str:
        """The operation's dynamic campaign partitions (instance-wide, so one name per operation)."""
        return self.name("campaign")

    @property
    def wolkvox_key(self) -> str:
        """The resource key of the operation's Wolkvox API resource."""
        return self.name("wolkvox")

    @property
    def campaign_source_key(self) -> str:
        """The resource key of the operation's campaign source (its listed campaigns, or discovery)."""
        return self.name("campaign_source")

    @property
    def pool(self) -> str:
        """The Dagster pool of the operation's token: one per token variable, shared by operations with that token.

        ``WOLKVOX_TOKEN``'s pool is ``wolkvox_token``, as before operations.
        """
        if self.token_env == DEFAULT_TOKEN_ENV:
            return "wolkvox_token"
        return f"wolkvox_token__{self.token_env.lower()}"

    def build_defs(self, context: dg.ComponentLoadContext | None = None) -> dg.Definitions:
        """The operation's asset, checks, job, schedules, sensor and resources (``build_operation``)."""
        from amd_pipeline.orchestration.build import build_operation

        return build_operation(self)
