"""Input rules shared by the REST API (``/api``) and the gateway (``/v1``).

Why a module of its own: whatever a client sends ends up in PostgreSQL (which refuses NUL
characters in text and JSON, non-finite numbers in ``jsonb``, integers past 64 bits and
time-zone offsets of 16 hours or more), in HTTP headers to node agents (which must be ASCII
without control characters) or in Python's own limits (``json`` recursion, ``datetime`` years
1..9999). Each rule here turns one of those crashes into a 4xx that names the field, and each is
also written into the OpenAPI schema, so that what the schema allows is exactly what the server
accepts.

The rules:

- template names: ``^[-a-zA-Z0-9_.]{1,100}$`` (they travel in the ``X-Saga-Template`` header);
- workflow ids (``external_id``, ``X-Saga-Workflow``): 1..200 characters, any Unicode except
  control characters (C0, DEL, C1) and lone surrogates;
- free text (names, reasons, tool names, addresses): no NUL;
- JSON documents (``metadata``, policy ``params``): strings and keys without NUL or lone
  surrogates, finite numbers only, nested at most ``MAX_JSON_DEPTH`` deep, at most
  ``MAX_JSON_BYTES`` once serialised;
- request bodies: strict JSON (RFC 8259: no ``NaN``/``Infinity``), nested at most
  ``MAX_JSON_DEPTH`` deep;
- date-times: RFC 3339 with an explicit offset of at most 15:59 (PostgreSQL's range), read as
  UTC;
- database ids: 1..2**63-1 (PostgreSQL ``bigint``).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema, model_validator

TEMPLATE_NAME_PATTERN = r"^[-a-zA-Z0-9_.]{1,100}$"
TEMPLATE_NAME_RE = re.compile(r"[-a-zA-Z0-9_.]{1,100}")
WORKFLOW_ID_MAX_CHARS = 200
# Control characters (C0, DEL, C1): never part of an identifier. (Lone surrogates are refused
# too, by the JSON rules and by ``control_character``; Rust's regex engine, which pydantic uses,
# cannot name them in a pattern.)
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
WORKFLOW_ID_PATTERN = f"^[^{_CONTROL}]{{1,{WORKFLOW_ID_MAX_CHARS}}}$"
OPTIONAL_WORKFLOW_ID_PATTERN = f"^[^{_CONTROL}]{{0,{WORKFLOW_ID_MAX_CHARS}}}$"
_CONTROL_RE = re.compile(f"[{_CONTROL}\\ud800-\\udfff]")
NO_NUL_PATTERN = "^[^\\u0000]*$"

MAX_JSON_DEPTH = 32
"""Deepest nesting of a request body (and of any JSON document in it); deeper is a 400."""
MAX_JSON_BYTES = 64 * 1024
"""Largest ``metadata`` or policy ``params`` document, serialised as compact JSON."""
MAX_DB_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1

# RFC 3339 date-time with a mandatory offset of at most 15:59.
DATETIME_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
                    r"([Zz]|[+-](0[0-9]|1[0-5]):[0-5][0-9])$")
_DATETIME_RE = re.compile(DATETIME_PATTERN)
UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)


class JsonProblem(ValueError):
    """A JSON value breaks one of the rules; ``path`` is the dotted path to it (``""``: the
    whole document), ``syntax`` says the body is not (acceptable) JSON at all."""

    def __init__(self, path: str, message: str, *, syntax: bool = False) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
        self.syntax = syntax


def _reject_constant(name: str) -> Any:
    raise JsonProblem("", f"{name} is not valid JSON (RFC 8259 allows finite numbers only)",
                      syntax=True)


def loads_strict(raw: bytes | str) -> Any:
    """Parse a request body as RFC 8259 JSON and check it with ``check_json``.

    ``json.loads`` alone accepts ``NaN``/``Infinity``, turns ``1e400`` into ``inf`` and raises
    ``RecursionError`` (not ``ValueError``) on deep nesting: each would be a 500 further on.
    """
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except JsonProblem:
        raise
    except RecursionError as exc:
        raise JsonProblem("", f"nested deeper than {MAX_JSON_DEPTH} levels",
                          syntax=True) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limits
        raise JsonProblem("", f"not valid JSON: {exc}", syntax=True) from exc
    check_json(value)
    return value


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (U+0000) characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone UTF-16 surrogates"
    return None


def check_json(value: Any, path: str = "", *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``JsonProblem`` for the first NUL, lone surrogate, non-finite number or level of
    nesting past ``max_depth`` in ``value`` (iterative: a deep value cannot overflow the stack).
    Nesting is a syntax problem (400); the others name the field (422)."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, (dict, list)) and depth >= max_depth:
            raise JsonProblem("", f"nested deeper than {max_depth} levels", syntax=True)
        if isinstance(item, dict):
            for key, child in item.items():
                problem = _string_problem(str(key))
                child_path = f"{where}.{key}" if where else str(key)
                if problem:
                    raise JsonProblem(where, f"key {key!r} {problem}")
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{i}" if where else str(i), depth + 1)
                         for i, child in enumerate(item))
        elif isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                raise JsonProblem(where, problem)
        elif isinstance(item, float) and not math.isfinite(item):
            raise JsonProblem(where, "numbers must be finite (this one overflows a double)")


def json_document(value: Any) -> Any:
    """Validator of a stored JSON document (``metadata``, ``params``): the rules of
    ``check_json`` plus the size bound, so that PostgreSQL's ``jsonb`` always takes it."""
    check_json(value)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes as JSON ({size})")
    return value


def control_character(text: str) -> str | None:
    """The first control character or surrogate in ``text`` (``None`` when there is none)."""
    match = _CONTROL_RE.search(text)
    return match.group() if match else None


def workflow_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid workflow id, or ``None``."""
    if not value:
        return "must not be empty"
    if len(value) > WORKFLOW_ID_MAX_CHARS:
        return f"longer than {WORKFLOW_ID_MAX_CHARS} characters"
    bad = control_character(value)
    if bad is not None:
        return f"must not contain control characters (found U+{ord(bad):04X})"
    return None


def template_name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid template name, or ``None``."""
    if TEMPLATE_NAME_RE.fullmatch(value) is None:
        return f"must match {TEMPLATE_NAME_PATTERN} (it is sent to nodes in an HTTP header)"
    return None


def _datetime_input(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _DATETIME_RE.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        except ValueError as exc:
            raise ValueError(f"not a valid date-time: {exc}") from exc
    else:
        raise ValueError("must be an RFC 3339 date-time with an offset of at most 15:59, "
                         "e.g. 2026-01-31T12:00:00Z")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must carry a time-zone offset, e.g. Z or +02:00")
    offset = parsed.utcoffset()
    assert offset is not None
    if abs(offset) >= timedelta(hours=16):
        raise ValueError("time-zone offsets must be less than 16 hours")
    return parsed


def _to_utc(value: Any) -> datetime:
    parsed = _datetime_input(value)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("outside years 1..9999 once converted to UTC") from exc


def _to_utc_clamped(value: Any) -> datetime:
    parsed = _datetime_input(value)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return UTC_MIN if parsed.year == 1 else UTC_MAX


_DATETIME_SCHEMA = {"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}

UtcDateTime = Annotated[datetime, BeforeValidator(_to_utc), WithJsonSchema(_DATETIME_SCHEMA)]
"""A stored date-time: RFC 3339 with an offset, converted to UTC; 422 when that leaves years
1..9999 (``9999-12-31T23:59:59-12:00`` is in year 10000 in UTC)."""

UtcBound = Annotated[datetime, BeforeValidator(_to_utc_clamped),
                     WithJsonSchema(_DATETIME_SCHEMA)]
"""A date-time filter bound: like ``UtcDateTime``, but an instant past the ends of Python's
calendar in UTC stands for the earliest or latest instant (it filters as such)."""


def FiniteFloat(**constraints: Any) -> Any:  # noqa: N802  (a type factory)
    """A JSON number (never a string or boolean), finite, within ``constraints``."""
    return Annotated[float, Strict(), Field(allow_inf_nan=False, **constraints)]


def integral(value: Any) -> Any:
    """``3.0`` is the integer 3 (JSON Schema says so: an integer is a number without a
    fractional part); everything else is left to the strict check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def StrictInt(**constraints: Any) -> Any:  # noqa: N802
    """A JSON integer (``3`` or ``3.0``; never a string, a boolean or ``3.5``) within
    ``constraints``."""
    # The validator goes last: placed first, it makes pydantic write the bounds into the
    # JSON schema as raw "ge"/"le" instead of "minimum"/"maximum".
    return Annotated[int, Strict(), Field(**constraints), BeforeValidator(integral)]


def Text(max_length: int, min_length: int = 0) -> Any:  # noqa: N802
    """Free text without NUL characters (PostgreSQL refuses them)."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length,
                                pattern=NO_NUL_PATTERN)]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def Omittable(kind: Any) -> Any:  # noqa: N802
    """A PATCH field that may be left out but not sent as ``null`` (``null`` is 422). Its
    schema shows no ``null`` default, so the schema says exactly that."""
    return Annotated[kind, Field(json_schema_extra=_drop_default)]


StrictBool = Annotated[bool, Strict()]
SLUG_PATTERN = r"^[-a-zA-Z0-9_]{1,64}$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
NODE_NAME_PATTERN = r"^[-a-zA-Z0-9_]{1,100}$"
NodeName = Annotated[str, Field(pattern=NODE_NAME_PATTERN)]
TemplateName = Annotated[str, Field(pattern=TEMPLATE_NAME_PATTERN,
                                    description="An agent template name.")]
WorkflowId = Annotated[str, Field(pattern=OPTIONAL_WORKFLOW_ID_PATTERN,
                                  description="The agent's own id of the workflow "
                                  "(X-Saga-Workflow); empty for none.")]
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]

# The JSON Schema of a stored JSON document; "JsonValue" is added to the OpenAPI components.
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": f"Any JSON value: strings without NUL, finite numbers, nested at most "
                   f"{MAX_JSON_DEPTH} deep.",
    "anyOf": [
        {"type": "null"}, {"type": "boolean"}, {"type": "number"},
        {"type": "string", "pattern": NO_NUL_PATTERN},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {"type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN},
         "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
    ],
}
# pydantic resolves every "$ref" it is given, and JsonValue is not one of its models: fields
# carry this marker, which ``controlplane.api.openapi`` turns into the reference.
JSON_VALUE_MARKER: dict[str, Any] = {"x-saga-json-value": True}
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object", "propertyNames": {"pattern": NO_NUL_PATTERN},
    "additionalProperties": JSON_VALUE_MARKER,
    "description": f"A JSON object, at most {MAX_JSON_BYTES} bytes as JSON: strings without "
                   f"NUL, finite numbers, nested at most {MAX_JSON_DEPTH} deep.",
}


def _json_object(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return json_document(value)


JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object),
                       WithJsonSchema(JSON_OBJECT_SCHEMA)]


def _extras_schema(schema: dict[str, Any]) -> None:
    schema["propertyNames"] = {"pattern": NO_NUL_PATTERN}
    schema["additionalProperties"] = JSON_VALUE_MARKER


class Input(Schema):
    """Base of request bodies: a JSON object, nothing else. (ninja's ``Schema`` reads fields
    as attributes, so a list or a string would otherwise validate as an object whose fields
    are all missing.) Members it does not know are ignored, but must follow the JSON rules
    like the rest of the body; the schema says so."""

    model_config = ConfigDict(json_schema_extra=_extras_schema)

    @model_validator(mode="before")
    @classmethod
    def _json_object_only(cls, value: Any) -> Any:
        if not isinstance(getattr(value, "_obj", value), dict):
            raise ValueError("must be a JSON object")
        return value
