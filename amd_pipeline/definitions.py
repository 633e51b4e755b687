"""The code location's entry: workspace.yaml, ``[tool.dagster]`` and ``[tool.dg]`` name this module.

The operations and settings are read when Dagster loads the location, not at import; the Definitions
are built in the Dagster shell (:mod:`amd_pipeline.orchestration.build`).
"""

import dagster as dg

from amd_pipeline.orchestration.location import build_location


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's Definitions, built when Dagster loads the location (:func:`build_location`)."""
    return build_location()
