"""Operator tools: the eduhub CLI, DLQ replay and bench."""
