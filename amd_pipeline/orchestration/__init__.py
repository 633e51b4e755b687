"""The Dagster shell: assets, checks, schedules, sensors, resources, partitions, the instance.

Thin over :mod:`amd_pipeline.core` and :mod:`amd_pipeline.wolkvox`; never imports the command line.
Not named ``defs``: ``dg`` takes ``<root_module>/defs`` for its autoloaded defs folder (it scaffolds
into it), and these modules are built from settings by :mod:`amd_pipeline.orchestration.build`, not
autoloaded.
"""
