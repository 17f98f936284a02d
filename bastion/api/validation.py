"""Request checks that run before anything goes upstream. Each error names the field in `param`.

Only the shape is checked: types of OpenAI's fields and the message structure. Fields Bastion does not
know pass through untouched, and value ranges that differ between upstreams are left to the upstream.
Explicit nulls are accepted wherever OpenAI accepts them.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import invalid_request

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_PLAIN_ROLES = frozenset(("system", "developer", "user", "assistant"))  # need nothing beside content

_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = {"max_tokens": 1, "max_completion_tokens": 1, "n": 1, "top_logprobs": 0, "seed": None}
_BOOLEANS = ("stream", "logprobs", "parallel_tool_calls", "store")
_OBJECTS = ("stream_options", "response_format", "logit_bias", "metadata")


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", "model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' must be a non-empty string.", "model")
    return model


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _min_int(minimum: int | None) -> Any:
    return lambda value: _is_int(value) and (minimum is None or value >= minimum)


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))


def _are_tools(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, dict) for t in value)


def _are_stream_options(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("include_usage", False), bool | None)


# Each field's check, for the fields a body has (a body names a few of the 17): what `_check_in_order`
# would accept. A field that fails has `_check_in_order` name the first failing field, as always.
_VALID: dict[str, Any] = {
    **{name: _is_bool for name in _BOOLEANS},
    **{name: _is_number for name in _NUMBERS},
    **{name: _min_int(minimum) for name, minimum in _INTEGERS.items()},
    **{name: _is_object for name in _OBJECTS},
    "stream_options": _are_stream_options,
    "stop": _is_stop,
    "tools": _are_tools,
}


def check_common_fields(body: dict[str, Any]) -> None:
    """Type checks of OpenAI's optional scalar and object fields."""
    for name in _VALID.keys() & body.keys():
        value = body[name]
        if value is not None and not _VALID[name](value):
            _check_in_order(body)


def _check_in_order(body: dict[str, Any]) -> None:
    """Raises the error for the first field, in this order, that is not what OpenAI's types say."""
    for name in _BOOLEANS:
        value = body.get(name)
        if value is not None and not _is_bool(value):
            raise invalid_request(f"'{name}' must be a boolean.", name)
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and not _is_number(value):
            raise invalid_request(f"'{name}' must be a number.", name)
    for name, minimum in _INTEGERS.items():
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value):
            raise invalid_request(f"'{name}' must be an integer.", name)
        if minimum is not None and value < minimum:
            raise invalid_request(f"'{name}' must be at least {minimum}.", name)
    for name in _OBJECTS:
        value = body.get(name)
        if value is not None and not _is_object(value):
            raise invalid_request(f"'{name}' must be an object.", name)
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid_request(
            "'stream_options.include_usage' must be a boolean.", "stream_options.include_usage"
        )
    stop = body.get("stop")
    if stop is not None and not _is_stop(stop):
        raise invalid_request("'stop' must be a string or an array of strings.", "stop")
    tools = body.get("tools")
    if tools is not None and not _are_tools(tools):
        raise invalid_request("'tools' must be an array of objects.", "tools")


def check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise invalid_request("Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty array of message objects.", "messages")
    for index, message in enumerate(messages):
        if not _plain_message(message):
            _check_message(message, f"messages[{index}]")
    check_common_fields(body)


def _plain_message(message: Any) -> bool:
    """The everyday message, accepted without naming where it is: a role, string content, nothing more
    to look at (anything else is looked at by `_check_message`)."""
    return (
        type(message) is dict
        and len(message) == 2
        and type(message.get("content")) is str
        and message.get("role") in _PLAIN_ROLES
    )


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise invalid_request(f"'{where}' must be an object with a role and content.", where)
    role = message.get("role")
    if role not in ROLES:
        shown = f"'{role}'" if isinstance(role, str) else "missing" if role is None else "not a string"
        raise invalid_request(
            f"Invalid role {shown} in '{where}.role'; expected one of: {', '.join(ROLES)}.", f"{where}.role"
        )
    content = message.get("content")
    content_where = f"{where}.content"
    if content is None:
        if role in ("system", "developer", "user", "tool"):
            raise invalid_request(f"Missing required parameter: '{content_where}'.", content_where)
    elif isinstance(content, list):
        if not content and role != "assistant":
            raise invalid_request(f"'{content_where}' must not be an empty array.", content_where)
        for index, part in enumerate(content):
            _check_part(part, f"{content_where}[{index}]")
    elif not isinstance(content, str):
        raise invalid_request(
            f"'{content_where}' must be a string or an array of content parts.", content_where
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_request(f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid_request(f"'{where}.name' must be a string.", f"{where}.name")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)
    ):
        raise invalid_request(f"'{where}.tool_calls' must be an array of objects.", f"{where}.tool_calls")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise invalid_request(f"'{where}' must be an object with a string 'type'.", f"{where}.type")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise invalid_request(f"'{where}.text' must be a string.", f"{where}.text")


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) for t in value)


def _text_or_tokens(value: Any) -> bool:
    """A string, strings, a token array, or token arrays (OpenAI's prompt and input shapes)."""
    if isinstance(value, str) or _is_token_list(value):
        return True
    return (
        isinstance(value, list)
        and bool(value)
        and (all(isinstance(v, str) for v in value) or all(_is_token_list(v) for v in value))
    )


def check_completions(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise invalid_request("Missing required parameter: 'prompt'.", "prompt")
    if not _text_or_tokens(prompt):
        raise invalid_request(
            "'prompt' must be a string, an array of strings, or an array (of arrays) of token ids.", "prompt"
        )
    for name in ("echo",):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid_request(f"'{name}' must be a boolean.", name)
    if body.get("suffix") is not None and not isinstance(body["suffix"], str):
        raise invalid_request("'suffix' must be a string.", "suffix")
    check_common_fields(body)


def check_embeddings(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is None:
        raise invalid_request("Missing required parameter: 'input'.", "input")
    if not _text_or_tokens(value):
        raise invalid_request(
            "'input' must be a string, an array of strings, or an array (of arrays) of token ids.", "input"
        )
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise invalid_request("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise invalid_request("'dimensions' must be a positive integer.", "dimensions")


def check_images(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid_request("'prompt' must be a non-empty string.", "prompt")
    count = body.get("n")
    if count is not None and (not _is_int(count) or not 1 <= count <= 10):
        raise invalid_request("'n' must be an integer from 1 to 10.", "n")
    for name in ("size", "quality", "style", "background", "output_format"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise invalid_request(f"'{name}' must be a string.", name)
    response_format = body.get("response_format")
    if response_format is not None and response_format not in ("url", "b64_json"):
        raise invalid_request("'response_format' must be 'url' or 'b64_json'.", "response_format")


def check_responses(body: dict[str, Any]) -> None:
    if body.get("store") is not False:
        raise invalid_request(
            "Bastion's /v1/responses is stateless: set 'store' to false and keep conversation state.",
            "store",
        )
    value = body.get("input")
    if value is None:
        raise invalid_request("Missing required parameter: 'input'.", "input")
    if not isinstance(value, str | list):
        raise invalid_request("'input' must be a string or an array of input items.", "input")
    for name in ("previous_response_id", "conversation"):
        if body.get(name) is not None:
            message = f"'{name}' needs stored responses; Bastion's /v1/responses is stateless."
            raise invalid_request(message, name)
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise invalid_request("'instructions' must be a string.", "instructions")
    cap = body.get("max_output_tokens")
    if cap is not None and (not _is_int(cap) or cap < 1):
        raise invalid_request("'max_output_tokens' must be a positive integer.", "max_output_tokens")
    check_common_fields(body)


RIVA_ENCODINGS = {1: "LINEAR_PCM", 2: "FLAC", 3: "MULAW", 4: "OGGOPUS", 20: "ALAW"}
MAX_TTS_CHARACTERS = 10_000


def check_tts(body: dict[str, Any]) -> None:
    """NVIDIA Riva's text_to_audio JSON, as OVH AI Endpoints serve it."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise invalid_request("'text' must be a non-empty string.", "text")
    if len(text) > MAX_TTS_CHARACTERS:
        raise invalid_request(f"'text' is longer than {MAX_TTS_CHARACTERS} characters.", "text")
    for name in ("language_code", "voice_name"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise invalid_request(f"'{name}' must be a non-empty string (e.g. 'en-US').", name)
    rate = body.get("sample_rate_hz")
    if rate is not None and (not _is_int(rate) or not 8000 <= rate <= 48000):
        raise invalid_request("'sample_rate_hz' must be an integer from 8000 to 48000.", "sample_rate_hz")
    encoding = body.get("encoding")
    if encoding is not None and encoding not in RIVA_ENCODINGS:
        choices = ", ".join(f"{k} ({v})" for k, v in RIVA_ENCODINGS.items())
        raise invalid_request(f"'encoding' must be one of {choices}.", "encoding")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise invalid_request("'model' must be a non-empty string.", "model")
