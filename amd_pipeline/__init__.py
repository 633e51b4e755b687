"""amd_pipeline: Wolkvox AMD Accumulated (campaign_6) into DuckDB, orchestrated by Dagster."""


def __getattr__(name: str):
    # `type: amd_pipeline.WolkvoxOperation` in a defs.yaml, without importing Dagster with the package
    # (the CLI's fast commands and the layers below the Dagster shell never need it).
    if name == "WolkvoxOperation":
        from amd_pipeline.orchestration.component import WolkvoxOperation

        return WolkvoxOperation
    raise AttributeError(f"module 'amd_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dg's registry lists a module's members with dir() (`dg list components`, `dg check defs`).
    return sorted([*globals(), "WolkvoxOperation"])
