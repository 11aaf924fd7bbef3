"""Connectors: turn changes in the source systems into ingest envelopes."""
