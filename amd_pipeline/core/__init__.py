"""The pure core: parsing, storage, loading, the call budget and token guard, settings, messages.

Imports no dagster (amd_pipeline_tests/test_layers.py holds it to that); it may import
:mod:`amd_pipeline.wolkvox` and nothing above it.
"""
