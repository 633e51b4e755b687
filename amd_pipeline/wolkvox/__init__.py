"""The vendor boundary: the Wolkvox API client, its models, its day windows and the simulator that plays the vendor.

The client does HTTP, retries and the error tree; ``windows`` is the one place a local day becomes the vendor's
date_ini/date_end. Imports no dagster and nothing else of amd_pipeline.
"""
