"""SQL for the gateway's hot path, written from the Django models' metadata.

The hot path writes rows with its own statements (``controlplane.gateway.ledger``), not through
the ORM, but the models stay the one definition of the tables: column lists come from the
models' concrete fields and every column a statement does not set gets the field's own default
(``Field.get_default``, adapted with ``get_db_prep_save``), exactly what ``Model.save`` would
write. A column added to ``Call``, ``Workflow`` or ``ToolCall`` therefore needs no change here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.db.models.expressions import DatabaseDefault


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def field_of(model: type[Model], attname: str) -> Field:
    """The concrete field behind an attribute name (``workflow_id`` or ``seq``)."""
    for field in model._meta.concrete_fields:
        if field.attname == attname:
            return field
    raise KeyError(f"{model.__name__} has no column {attname!r}")


def column(model: type[Model], attname: str) -> str:
    return connection.ops.quote_name(field_of(model, attname).column)


def attnames(model: type[Model]) -> list[str]:
    """Every concrete column's attribute name (``workflow_id`` for the ``workflow`` FK)."""
    return [f.attname for f in model._meta.concrete_fields]


def select_list(model: type[Model], alias: str) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}"
                     for f in model._meta.concrete_fields)


_names: dict[type[Model], tuple[str, ...]] = {}


def from_row(model: type[Model], values: Sequence[Any]) -> Any:
    """A model instance from a ``select_list`` row, as the ORM loads one (no query), without
    ``Model.__init__``'s per-field work and signals: the hot path reads rows it never saves."""
    names = _names.get(model)
    if names is None:
        names = _names[model] = tuple(attnames(model))
    return instance(model, dict(zip(names, values, strict=True)))


def instance(model: type[Model], values: Mapping[str, Any],
             related: Mapping[str, Model] | None = None) -> Any:
    """An instance with ``values`` (attribute names) and ``related`` (already loaded related
    objects, by field name) as the ORM would have loaded them."""
    obj = model.__new__(model)
    obj.__dict__.update(values)
    state = ModelState()
    state.adding = False
    state.db = connection.alias
    if related:
        state.fields_cache.update(related)
    obj._state = state
    return obj


_PLAIN = frozenset({"AutoField", "BigAutoField", "BigIntegerField", "BooleanField", "CharField",
                    "DateTimeField", "FloatField", "ForeignKey", "IntegerField",
                    "PositiveBigIntegerField", "PositiveIntegerField",
                    "PositiveSmallIntegerField", "SlugField", "SmallIntegerField", "TextField"})
"""Fields whose Python values psycopg sends as they are (aware datetimes included): nothing to
adapt; any other field goes through ``get_db_prep_save`` (JSON, decimals, ...)."""


def prep(field: Field, value: Any) -> Any:
    if value is None or field.get_internal_type() in _PLAIN:
        return value
    return field.get_db_prep_save(value, connection)


_prep = prep


def sql_type(model: type[Model], attname: str) -> str:
    """The column's SQL type, for a parameter's cast (``%s::integer``): a parameter in a
    SELECT list or a NULL has no type PostgreSQL could infer."""
    field = field_of(model, attname)
    db_type = field.db_type(connection)
    assert db_type, f"{model.__name__}.{attname} has no column type"
    return db_type


@dataclass(frozen=True, slots=True)
class Insert:
    """An INSERT of one row: the columns a caller gives (``given``, values or SQL expressions)
    and every other one at its field default."""

    sql_columns: str
    fields: tuple[Field, ...]  # the columns filled with a parameter, in statement order
    placeholders: str

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for field in self.fields:
            value = values[field.attname] if field.attname in values else field.get_default()
            out.append(_prep(field, value))
        return out


def insert(model: type[Model], given: tuple[str, ...],
           expressions: Mapping[str, str] | None = None) -> Insert:
    """The pieces of ``INSERT INTO t (columns) VALUES (...)`` / ``SELECT ...``: ``given`` and the
    default columns are parameters (cast to their column's type); ``expressions`` (attname ->
    SQL) are inlined. Columns whose
    default lives in the database (``db_default``) are left to it, and the primary key too
    unless given."""
    expressions = dict(expressions or {})
    columns: list[str] = []
    slots: list[str] = []
    fields: list[Field] = []
    for field in model._meta.concrete_fields:
        name = field.attname
        if name in expressions:
            columns.append(connection.ops.quote_name(field.column))
            slots.append(expressions[name])
            continue
        if field.primary_key and name not in given:
            continue
        if name not in given and isinstance(field.get_default(), DatabaseDefault):
            continue
        columns.append(connection.ops.quote_name(field.column))
        slots.append(f"%s::{field.db_type(connection)}")
        fields.append(field)
    return Insert(", ".join(columns), tuple(fields), ", ".join(slots))


def assignments(model: type[Model], names: tuple[str, ...], *, increment: bool = False) -> str:
    """``col = %s, ...`` (or ``col = col + %s``) for an UPDATE's SET clause."""
    parts = []
    for name in names:
        col = column(model, name)
        parts.append(f"{col} = {col} + %s" if increment else f"{col} = %s")
    return ", ".join(parts)


def prepared(model: type[Model], names: tuple[str, ...], values: Mapping[str, Any]) -> list[Any]:
    """``values`` of ``names`` adapted for the database, in order."""
    return [_prep(field_of(model, name), values[name]) for name in names]
