"""The `mask` PII policy: masking strings and person names, and the masked field's type and transform.

mask, by the field's type:
  * person names (`"eduhub.text": "person_name"`): the first letter of each word and a dot,
    "Nguyễn Thị Thu Hà" → "N. T. T. H.";
  * other strings: the first 4 and last 3 characters with stars between, at least 3 stars
    ("0912345678" → "0912***678", "+84912345678" → "+849*****678"). A string shorter than 10
    characters keeps only its first and last character (fewer than 5: stars only), so that
    a short value never shows more than it hides;
  * dates (`date_of_birth`): the year only; the projected field becomes an Avro `int`
    holding the year (doc says "Year only (masked)");
  * records (`address`): `province_code` kept, every other field of the record becomes null;
    in the projected schema those fields become nullable (`["null", T]`, default null);
  * any other type (numbers, enums, arrays, timestamps): mask is refused at configuration
    time (`SubscriptionError`): choose drop or pseudonymise.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from hub.routing.errors import SubscriptionError
from hub.routing.projection import split_nullable, type_kind


def mask_string(value: str) -> str:
    """First 4 and last 3 characters, stars between (at least 3); short strings show less."""
    n = len(value)
    if n >= 10:
        return value[:4] + "*" * (n - 7) + value[-3:]
    if n >= 5:
        return value[0] + "*" * (n - 2) + value[-1]
    return "*" * max(n, 3)


def mask_name(value: str) -> str:
    """The first letter of each word and a dot: "Nguyễn Thị Thu Hà" → "N. T. T. H."."""
    return " ".join(word[0] + "." for word in value.split())


def mask_transform(entity: str, field: dict[str, Any], named: dict[str, Any]) -> Callable[[Any], Any]:
    """The masking function of a projected field; rewrites `field`'s type and doc to the masked shape.

    `named` holds the entity's named types (a record type may be referenced by name).
    """
    nullable, base = split_nullable(field["type"])
    if isinstance(base, str) and base in named:
        base = named[base]
    kind = type_kind(base)
    if kind == "string":
        return mask_name if field.get("eduhub.text") == "person_name" else mask_string
    if kind == "date":
        field["type"] = ["null", "int"] if nullable else "int"
        field.pop("default", None)
        if nullable:
            field["default"] = None
        field["doc"] = (field.get("doc", "") + " Year only").strip()
        return lambda value: value.year
    if kind == "record":
        record = copy.deepcopy(base)
        cleared = []
        for sub in record["fields"]:
            if sub["name"] == "province_code":
                continue
            cleared.append(sub["name"])
            sub_nullable, _ = split_nullable(sub["type"])
            if not sub_nullable:
                sub["type"] = ["null", sub["type"]]
            sub["default"] = None
        record["doc"] = (record.get("doc", "") + " Only province_code is kept (masked).").strip()
        field["type"] = ["null", record] if nullable else record
        field.pop("default", None)
        if nullable:
            field["default"] = None
        names = frozenset(cleared)
        return lambda value: {k: (None if k in names else v) for k, v in value.items()}
    raise SubscriptionError(
        f"{entity}.{field['name']}: mask is not supported for a field of type {kind}: "
        f"expected drop, keep or pseudonymise", f"pii.{field['name']}")
