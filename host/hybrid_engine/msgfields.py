"""A message's fields checked against JSON types, shared by every module of host handlers.

A field that is missing or of the wrong type is a BadRequest naming the field (with a
prefix for nested objects, e.g. "page.title") and what was expected.
"""

from __future__ import annotations

from .errors import BadRequest

TYPE_CHECKING = False  # `typing` itself costs the host's start 2 ms
if TYPE_CHECKING:
    from typing import Any

_MISSING = object()


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def field(msg: dict, name: str, types: type | tuple[type, ...], what: str, *, required: bool = True,
          default: Any = None, prefix: str = "") -> Any:
    """msg[name] checked against JSON types; BadRequest naming the field otherwise.

    An optional field may be absent or null. Booleans are never taken for numbers.
    """
    label = prefix + name
    value = msg.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise BadRequest(f"{label}: missing (expected {what})", field=label)
        return default
    types = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise BadRequest(f"{label}: expected {what}, got {json_type(value)}", field=label)
    return value


def text_field(msg: dict, name: str, *, required: bool = True, prefix: str = "") -> str | None:
    """A string field; a required one may not be blank either."""
    value = field(msg, name, str, "a string", required=required, prefix=prefix)
    if required and not value.strip():
        raise BadRequest(f"{prefix}{name}: must not be empty", field=prefix + name)
    return value


__all__ = ["field", "json_type", "text_field"]
