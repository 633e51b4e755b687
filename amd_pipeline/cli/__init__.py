"""The command line: ``amd-pipeline`` (console script ``amd_pipeline.cli:main``) and ``python -m amd_pipeline``."""

from amd_pipeline.cli.commands import main

__all__ = ["main"]
