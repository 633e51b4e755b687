"""How a failed load reads in Dagster's UI: one sentence, never a class path."""

import dagster as dg


class LoadFailed(dg.Failure):
    """A load that failed, described in one sentence from :func:`amd_pipeline.core.messages.explain`.

    Dagster shows a step failure as ``module.Class: description``. Declared in ``builtins``, this class reads
    ``LoadFailed: could not reach ...`` in the UI instead of a module path.
    """


LoadFailed.__module__ = "builtins"
