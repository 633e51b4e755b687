"""Old dotted path of :mod:`amd_pipeline.orchestration.event_log`, kept for instance configs.

A ``DAGSTER_HOME`` created before the package was split keeps its copy of the shipped ``dagster.yaml``
(``prepare_home`` writes it only when the home has none), which names ``module: amd_pipeline.event_log``.
Nothing in the package imports this module; the shipped file names the new path.
"""

from amd_pipeline.orchestration.event_log import AmdSqliteInstance

__all__ = ["AmdSqliteInstance"]
