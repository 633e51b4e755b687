"""The Wolkvox API client: HTTP, retries and the error tree. Imports no dagster."""
