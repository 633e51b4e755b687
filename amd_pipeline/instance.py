"""Old dotted path of :func:`amd_pipeline.orchestration.instance.prepare_home`, kept for installed units.

systemd units copied from ``deploy/`` before the package was split run
``python -c "from amd_pipeline.instance import prepare_home; prepare_home()"`` before each start.
Nothing in the package imports this module; the units in ``deploy/`` name the new path.
"""

from amd_pipeline.orchestration.instance import prepare_home

__all__ = ["prepare_home"]
