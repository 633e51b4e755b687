"""The code location: the operations it holds (folders, or the environment's one) and what they share."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from amd_pipeline.core.settings import DefinitionSettings
from amd_pipeline.orchestration.build import build_operation, build_shared
from amd_pipeline.orchestration.component import WolkvoxOperation
from amd_pipeline.orchestration.operations import Operations, load_operations


def build_definitions(settings: DefinitionSettings) -> dg.Definitions:
    """The single-operation code location: the operation the environment describes, and what is shared."""
    op = WolkvoxOperation.from_settings(settings)
    return dg.Definitions.merge(build_operation(op), build_shared([op], settings))


def build_location(found: Operations | None = None, environ: Mapping[str, str] | None = None) -> dg.Definitions:
    """The code location: every operation folder (``defs.yaml``), or the environment's one operation.

    ``found``: the operations a command already loaded, not read again.
    """
    settings = DefinitionSettings.from_env(environ)
    found = found or load_operations(environ)
    if found.tree is None:
        return build_definitions(settings)
    return dg.Definitions.merge(found.tree.build_defs(), build_shared(found.operations, settings))
