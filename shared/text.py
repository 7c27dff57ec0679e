"""The one string type of every request model: text PostgreSQL can store.

A JSON body may carry ``\\u0000`` or an unpaired surrogate such as ``\\ud800``: both are valid
JSON escapes, so the body parses, but PostgreSQL ``text`` cannot hold NUL and UTF-8 cannot encode
a lone surrogate. Such a value used to reach the database and answer 500 (in a batch, failing
every item on every retry). A field declared ``Annotated[str, Text(...)]`` refuses both before
anything else is checked, with a validation error (422 in the API's error shape, per item in
batches); ``Text`` also carries the field's length, pattern and whitespace rules, so they apply
to the string as usual and appear in OpenAPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

NUL_PROBLEM = "must not contain NUL characters (\\u0000): text cannot hold them"
SURROGATE_PROBLEM = "must not contain unpaired surrogates (\\ud800-\\udfff): they are not Unicode text"


def storable(value: Any) -> Any:
    """``value`` unchanged unless it is a string holding NUL or an unpaired surrogate (then refused)."""
    if not isinstance(value, str):
        return value  # the str validation after this one says what is wrong
    if "\x00" in value:
        raise PydanticCustomError("text_nul", NUL_PROBLEM)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError("text_surrogate", SURROGATE_PROBLEM) from None
    return value


@dataclass(frozen=True, slots=True)
class Text:
    """A request string's rules: ``Annotated[str, Text(strip=True, max_length=300)]``."""

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    strip: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """A str schema with these rules, behind the NUL and surrogate check."""
        rules = core_schema.str_schema(
            strip_whitespace=self.strip or None,
            min_length=self.min_length,
            max_length=self.max_length,
            pattern=self.pattern,
        )
        return core_schema.no_info_before_validator_function(storable, rules)
