"""The vendor boundary: the Wolkvox API client (HTTP, retries, the error tree), its models, the one
place a local day becomes the vendor's date_ini/date_end (windows), and the simulator that plays the
vendor. Imports no dagster and nothing else of amd_pipeline.
"""
