"""SubscriptionError: the one error raised while building a subscription (config, filter, projection, PII)."""

# Its own module because the filter language raises it and the config models (which compile
# the filter while validating) sit above the filter language: this keeps hub/routing acyclic.

from __future__ import annotations


class SubscriptionError(ValueError):
    """A subscription cannot be built as configured; `key` names the offending config key."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key
