"""What the hub would say about an envelope a connector produced: the worker's own validation path."""

from __future__ import annotations

import json

from hub.contract.schemas import Catalogue
from hub.stages.validate import Invalid, Validator

_VALIDATOR = Validator(Catalogue.load())


def hub_problems(envelope: dict) -> list:
    """The problems the validate stage would report ([] when the envelope would become canonical)."""
    result = _VALIDATOR.validate(json.dumps(envelope, ensure_ascii=False).encode())
    return result.problems if isinstance(result, Invalid) else []
