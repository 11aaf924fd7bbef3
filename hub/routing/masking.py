"""The `mask` PII policy: masking strings and person names, and the masked field's type and transform.

mask, by the field's type:
  * person names (`"eduhub.text": "person_name"`): the first letter of each word and a dot,
    "Nguyễn Thị Thu Hà" → "N. T. T. H.";
  * other strings (personal ids, phones, e-mails, identifiers): at most 4 characters stay
    visible, always the last ones, the rest become stars: a string of 10 or more characters
    keeps its last 4 ("031206001234" → "********1234", "+84912345678" → "********5678");
    5 to 9 characters keep only the first and the last; fewer than 5 become stars only. The
    last 4 digits of a personal id are its serial number's end: with them alone, the birth
    province and most of the serial stay hidden;
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
    """Stars and the last 4 characters (10 or more characters); short strings show less."""
    n = len(value)
    if n >= 10:
        return "*" * (n - 4) + value[-4:]
    if n >= 5:
        return value[0] + "*" * (n - 2) + value[-1]
    return "*" * max(n, 3)


def mask_name(value: str) -> str:
    """The first letter of each word and a dot: "Nguyễn Thị Thu Hà" → "N. T. T. H."."""
    return " ".join(word[0] + "." for word in value.split())


def mask_transform(entity: str, field: dict[str, Any], named: dict[str, Any],
                   path: str | None = None) -> Callable[[Any], Any]:
    """The masking function of a projected field; rewrites `field`'s type and doc to the masked shape.

    `named` holds the entity's named types (a record type may be referenced by name); `path` is the
    field's dotted path when it is nested (for error messages).
    """
    path = path or field["name"]
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
        f"{entity}.{path}: mask is not supported for a field of type {kind}: "
        f"expected drop, keep or pseudonymise", f"pii.{path}")
