"""The request string type: NUL and unpaired surrogates refused first; the field's own rules as before."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from shared.text import NUL_PROBLEM, SURROGATE_PROBLEM, Text


class Body(BaseModel):
    code: Annotated[str, Text(strip=True, min_length=2, max_length=5, pattern=r"^[a-z]+$")]
    note: Annotated[str, Text(max_length=10), AfterValidator(str.upper)] = ""


def errors(**fields: object) -> list[tuple[str, str, str]]:
    with pytest.raises(ValidationError) as refused:
        Body.model_validate(fields)
    return [(".".join(map(str, e["loc"])), e["type"], e["msg"]) for e in refused.value.errors()]


def test_nul_and_unpaired_surrogates_are_refused_with_a_readable_problem() -> None:
    assert errors(code="ab\x00") == [("code", "text_nul", NUL_PROBLEM)]
    assert errors(code="ab", note="\udc00") == [("note", "text_surrogate", SURROGATE_PROBLEM)]
    # From JSON too: the escapes parse, then the type refuses them.
    with pytest.raises(ValidationError, match="text_nul"):
        Body.model_validate_json('{"code": "ab", "note": "a\\u0000"}')


def test_the_fields_own_rules_apply_after_stripping_as_before() -> None:
    assert Body.model_validate({"code": "  abcde  ", "note": "done"}) == Body(code="abcde", note="DONE")
    assert [t for _, t, _ in errors(code="   a  ")] == ["string_too_short"]
    assert [t for _, t, _ in errors(code="abcdef")] == ["string_too_long"]
    assert [t for _, t, _ in errors(code="AB")] == ["string_pattern_mismatch"]
    assert [t for _, t, _ in errors(code=5)] == ["string_type"]
    assert Body.model_validate({"code": "ab", "note": "中文也行"}).note == "中文也行"


def test_the_rules_are_in_the_json_schema() -> None:
    schema = Body.model_json_schema()["properties"]
    assert schema["code"] == {
        "maxLength": 5,
        "minLength": 2,
        "pattern": "^[a-z]+$",
        "title": "Code",
        "type": "string",
    }
    assert schema["note"]["maxLength"] == 10
