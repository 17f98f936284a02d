"""The field checks that look only at the fields a body has give the answers of the checks in order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.api.validation import _VALID, _check_in_order, check_chat, check_common_fields
from bastion.errors import ApiError

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=3),
    st.sampled_from([1.0, 2.5, "x", "", [], ["a"], ["a", 1], [{}], [{"a": 1}, 2], {}]),
    st.fixed_dictionaries({}, optional={"include_usage": st.one_of(st.none(), st.booleans(), st.just(1))}),
)
bodies = st.dictionaries(st.sampled_from([*_VALID, "model", "messages", "other"]), values, max_size=8)


def outcome(check: Any, body: dict[str, Any]) -> tuple[str, str | None] | None:
    try:
        check(body)
    except ApiError as error:
        return error.message, error.param
    return None


@settings(max_examples=1500, deadline=None)
@given(bodies)
def test_the_fields_present_are_judged_as_the_checks_in_order_judge_them(body: dict[str, Any]) -> None:
    assert outcome(check_common_fields, body) == outcome(_check_in_order, body)


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "hi"},
        {"role": "tool", "content": "x"},  # needs a tool_call_id
        {"role": "user", "content": None},
        {"role": "assistant", "content": "x", "name": 1},
        {"role": "robot", "content": "x"},
        {"role": "user", "content": ["x"]},
    ],
)
def test_a_plain_message_passes_and_any_other_is_looked_at_whole(message: dict[str, Any]) -> None:
    body = {"messages": [{"role": "system", "content": "s"}, message]}
    error = outcome(check_chat, body)
    if message == {"role": "user", "content": "hi"}:
        assert error is None
    else:
        assert error is not None and error[1] is not None and error[1].startswith("messages[1]")
