"""``python -m amd_pipeline``: the ``amd-pipeline`` command."""

from amd_pipeline.cli import main

main()
