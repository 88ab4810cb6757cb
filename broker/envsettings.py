"""The one settings mechanism of the services: typed fields read from environment variables by pydantic-settings.

A settings class declares each setting once, as a field: its type, its default, its variable
(`Field(default, validation_alias="NAME")`) and a docstring `NAME: meaning` (what the README's configuration table
shows; a class whose docstring names another variable than its field reads is refused when it is defined).
`read_env(environ)` reads the variables from `environ` (default `os.environ`); each class's `from_env` calls it with
the values it derives from several variables. Constructing the class with keywords gives the defaults and those
values, and reads no environment. A value the type refuses raises one
`SettingsError` that names the variable: `NAME must be an integer, got 'x'`, `NAME must be at least 1, got 0`,
`NAME must be one of a, b, got 'c'`; a field's own parser (a `BeforeValidator` raising `ValueError`) words its own.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from broker.errors import SettingsError

__all__ = ["Csv", "EnvSettings", "Flag", "Integer", "NoDecode", "OptionalText", "csv", "from_text", "whole_number"]

_TRUE = {"1", "true", "yes", "on"}


def _flag(raw: Any) -> Any:
    return raw.strip().lower() in _TRUE if isinstance(raw, str) else raw


def csv(raw: str) -> tuple[str, ...]:
    """Comma-separated items, blanks dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def whole_number(raw: Any) -> Any:
    """For a number field that takes only a whole number from its variable."""
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            raise PydanticCustomError("int_parsing", "not an integer") from None
    return raw


def _none_when_empty(raw: Any) -> Any:
    return raw or None


#: A whole number as Python's `int()` reads it (`5.0` is not one).
Integer = Annotated[int, BeforeValidator(whole_number)]
#: `1`/`true`/`yes`/`on` (any case) is true, anything else false.
Flag = Annotated[bool, BeforeValidator(_flag)]
#: Text; empty is the same as unset.
OptionalText = Annotated[str | None, NoDecode, BeforeValidator(_none_when_empty)]
#: Comma-separated names; blanks dropped.
Csv = Annotated[tuple[str, ...], NoDecode, BeforeValidator(lambda raw: csv(raw) if isinstance(raw, str) else raw)]


def from_text(parse: Callable[[str], Any]) -> Any:
    """`Annotated[kind, NoDecode, from_text(parse)]`: `parse` builds the value from its variable's text (JSON with
    its own messages, a list, …); a value given as a keyword is taken as it is."""
    return BeforeValidator(lambda raw: parse(raw) if isinstance(raw, str) else raw)


class _Given(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


class EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, extra="ignore", populate_by_name=True,
                                      arbitrary_types_allowed=True, use_attribute_docstrings=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            variable = field.validation_alias
            if variable and not (field.description or "").startswith(f"{variable}: "):
                raise TypeError(f"{cls.__name__}.{name}: its docstring must start with `{variable}: `")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment comes in through from_env only

    @classmethod
    def read_env(cls, environ: Mapping[str, str] | None = None, **derived: Any) -> Self:
        """The settings `environ` sets (default `os.environ`), with `derived` values (computed from several
        variables) over them."""
        raw = _Given(cls, os.environ if environ is None else environ)()
        for name in derived:
            raw.pop(name, None)
            raw.pop(str(cls.model_fields[name].validation_alias), None)
        try:
            return cls(**{**raw, **derived})
        except ValidationError as exc:
            raise SettingsError("; ".join(_message(cls, e) for e in exc.errors())) from exc


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _message(cls: type[EnvSettings], error: Any) -> str:
    key = str(error["loc"][0]) if error["loc"] else ""
    field = cls.model_fields.get(key) or next(
        (f for f in cls.model_fields.values() if f.validation_alias == key), None)
    name = str(field.validation_alias) if field is not None and field.validation_alias else key
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "int_parsing":
        return f"{name} must be an integer, got {value!r}"
    if kind == "float_parsing":
        return f"{name} must be a number, got {value!r}"
    if kind == "greater_than_equal":
        return f"{name} must be at least {_number(ctx['ge'])}, got {_number(value)}"
    if kind == "literal_error" and field is not None:
        allowed = typing.get_args(field.annotation)
        return f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}"
    return f"{name}: {error['msg']}"
