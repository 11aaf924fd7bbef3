"""Kafka plumbing: the transactional batch loop, the batch writer, admin, reading and tailing."""
