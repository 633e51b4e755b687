"""amd_pipeline: Wolkvox AMD Accumulated (campaign_6) into DuckDB, orchestrated by Dagster."""
