"""Where the members of a JSON object lie in its bytes: the top-level keys, as a JSON parser reads them.

Bastion decides on some top-level fields (`model`, `stream`, `max_tokens`...) from the parsed body and
forwards the client's bytes. Both must mean the same request, so the bytes are read the way a parser
reads them, not by looking for `"model":`: strings are skipped whole (so an escaped quote inside one is
not an end), brackets are counted (so a `model` nested in a tool schema is not top-level), and a key is
compared decoded (so `"mod\\u0065l"` is `model`). A top-level key written twice is refused: parsers
disagree on which one counts (orjson keeps the last, others the first), so what Bastion checked and
bills could differ from what the upstream reads.

The scan runs on bytes orjson has already accepted as one JSON object, so it checks no syntax. One
regular expression (in C) matches whole top-level members, values nested up to 8 deep included: a
chat body is a handful of matches. Deeper values are read token by token instead.

Most bodies need no scan at all (`_plainly_once`): when the bytes hold no `\\u` or `\\/` escape and
each of orjson's keys is plain (nothing JSON must escape) and is found quoted exactly once in them, no
key can be written twice (a second spelling of a plain key without those escapes is the same bytes),
and that one place is where the key lies. The regular expression cost ~30,000 instructions a chat
request (3 % of its path); counting the keys, a few thousand. A key found twice (a `model` in a tool schema,
say) takes the scan.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from itertools import chain
from typing import Any

import orjson

_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_NESTED = rb'[\[{](?:[^\[\]{}"]++|' + _STRING + rb")*+[\]}]"
for _ in range(7):
    _NESTED = rb'[\[{](?:[^\[\]{}"]++|' + _STRING + rb"|" + _NESTED + rb")*+[\]}]"
# Leading space, key, colon, value (a string, a container, a number or literal), space and `,` or `}`.
_MEMBER = re.compile(
    rb"(\s*+)(" + _STRING + rb")(\s*+:\s*+)(" + _STRING + rb"|" + _NESTED + rb"|[-+.0-9A-Za-z]++)(\s*+[,}])"
)
# For the deeper bodies: a string (with the colon after it when it is a key), or a bracket.
_TOKEN = re.compile(rb"(" + _STRING + rb")(\s*+:\s*+)?|([{\[])|[}\]]")
_KEY, _OPEN = 2, 3  # `lastindex` of a key token, of an opening bracket
# A member's value, for a key found plainly: `:` and space before it.
_VALUE = re.compile(rb"\s*+:\s*+(" + _STRING + rb"|" + _NESTED + rb"|[-+.0-9A-Za-z]++)")
_SPELLING_ESCAPE = re.compile(rb"\\[u/]")  # the escapes that can spell a plain key's characters
_MUST_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_quoted_keys: dict[str, bytes | None] = {}  # key -> its plain quoted bytes (None: not plain)
_QUOTED_KEYS_KEPT = 4096
_SPACE = b" \t\r\n"
_CLOSE = ord("}")

Span = tuple[int, int, int, int]  # key start, key end, value start, value end


class DuplicateKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Members:
    """The top-level members of one JSON object body, in order: where each key and value lies.

    `close` is the offset of the object's closing brace."""

    __slots__ = ("_found", "_keys", "_raw", "_spans", "_start", "close")

    def __init__(
        self,
        close: int,
        spans: dict[str, Span] | None,
        found: list[Any] | None,
        start: int,
        raw: bytes | None = None,
        keys: Collection[str] | None = None,
    ) -> None:
        self.close = close
        self._spans = spans  # key (decoded) -> its span, or made from `_found` when asked for
        self._found = found  # the member matches (lead, key, colon, value, tail), tiling from `_start`
        self._start = start
        self._raw = raw  # set when each key was found plainly once: looked up there when asked for
        self._keys = keys

    @classmethod
    def of(cls, raw: bytes, keys: Collection[str]) -> Members:
        """The members of `raw`, a JSON object orjson parsed into `keys` (its dict); DuplicateKey if a
        top-level key repeats."""
        if _plainly_once(raw, keys):
            return cls(_back_over_space(raw, len(raw)) - 1, None, None, 0, raw, keys)
        return cls.scanned(raw, len(keys))

    @classmethod
    def scanned(cls, raw: bytes, count: int) -> Members:
        """`of` by reading every member (`count`: how many keys orjson kept)."""
        # One match per member, when they tile the object (else a value is nested deeper).
        start = raw.find(b"{") + 1
        found = _MEMBER.findall(raw, start)
        end = start + sum(map(len, chain.from_iterable(found)))
        # Matches that skipped nothing end right after the closing brace, with only space after it.
        if not found or raw[end - 1] != _CLOSE or raw[end:].strip(_SPACE):
            return _by_tokens(raw)
        if len(found) != count:  # orjson kept one of each: some key was written twice
            return cls(end - 1, _spans_of(found, start), None, 0)  # raises DuplicateKey naming it
        return cls(end - 1, None, found, start)

    @property
    def spans(self) -> dict[str, Span]:
        """Every member's span, by its decoded key."""
        if self._spans is None:
            if self._raw is not None:
                self._spans = Members.scanned(self._raw, len(self._keys or ())).spans
            else:
                self._spans = _spans_of(self._found or [], self._start)
        return self._spans

    def span(self, name: str) -> Span | None:
        """The span of member `name`: the first members only are measured when it is among them."""
        if self._spans is not None:
            return self._spans.get(name)
        if self._raw is not None:
            return self._plain_span(self._raw, name)
        if self._found is None:
            return self.spans.get(name)
        quoted = b'"' + name.encode() + b'"'
        at = self._start
        for lead, key, colon, value, tail in self._found:
            key_start = at + len(lead)
            value_start = key_start + len(key) + len(colon)
            if key == quoted:
                return key_start, value_start - len(colon), value_start, value_start + len(value)
            if b"\\" in key:
                return self.spans.get(name)  # escaped keys: compared decoded
            at = value_start + len(value) + len(tail)
        return None

    def _plain_span(self, raw: bytes, name: str) -> Span | None:
        if self._keys is None or name not in self._keys:
            return None
        quoted = _quoted(name)
        assert quoted is not None  # every key was found plainly
        key_start = raw.find(quoted)
        key_end = key_start + len(quoted)
        value = _VALUE.match(raw, key_end)
        if value is None:  # nested deeper than the expression reaches
            return self.spans.get(name)
        return key_start, key_end, value.start(1), value.end(1)

    def member_span(self, name: str) -> tuple[int, int]:
        """The bytes to cut to remove member `name` with one of the commas beside it."""
        spans = self.spans
        keys = list(spans)
        at = keys.index(name)
        start, _, _, end = spans[name]
        if at + 1 < len(keys):
            return start, spans[keys[at + 1]][0]  # through the comma, up to the next key
        if at > 0:
            return spans[keys[at - 1]][3], end  # from the comma after the previous value
        return start, end


def _plainly_once(raw: bytes, keys: Collection[str]) -> bool:
    """Each key plain and quoted exactly once in `raw`, which has no escape that could spell one."""
    if _SPELLING_ESCAPE.search(raw):
        return False
    for key in keys:
        quoted = _quoted(key)
        if quoted is None or raw.count(quoted) != 1:
            return False
    return True


def _quoted(key: str) -> bytes | None:
    """`"key"` as bytes if nothing in the key must be escaped in JSON, else None."""
    try:
        return _quoted_keys[key]
    except KeyError:
        quoted = None if _MUST_ESCAPE.search(key) else b'"' + key.encode() + b'"'
        if len(_quoted_keys) < _QUOTED_KEYS_KEPT:  # clients' own field names: kept up to a bound
            _quoted_keys[key] = quoted
        return quoted


def _spans_of(found: list[Any], start: int) -> dict[str, Span]:
    """The spans of member matches tiling the object from `start`; DuplicateKey if a key repeats."""
    spans: dict[str, Span] = {}
    at = start
    for lead, key, colon, value, tail in found:
        key_start = at + len(lead)
        value_start = key_start + len(key) + len(colon)
        span = (key_start, value_start - len(colon), value_start, value_start + len(value))
        _add(spans, _name(key), span)
        at = value_start + len(value) + len(tail)
    return spans


def _by_tokens(raw: bytes) -> Members:
    keys: list[tuple[str, int, int, int]] = []
    depth = 0
    for token in _TOKEN.finditer(raw):
        kind = token.lastindex
        if kind == _KEY:
            if depth == 1:
                start, end = token.span(1)
                keys.append((_name(token.group(1)), start, end, token.end()))
        elif kind == _OPEN:
            depth += 1
        elif kind is None:  # a closing bracket
            depth -= 1
            if depth == 0:
                return _members_from_keys(raw, keys, token.start())
    raise ValueError("not a JSON object")  # orjson accepted it, so this is a bug


def _members_from_keys(raw: bytes, keys: list[tuple[str, int, int, int]], close: int) -> Members:
    """Each value ends before the space, comma and space that precede the next key (or the brace)."""
    spans: dict[str, Span] = {}
    for at, (name, key_start, key_end, value_start) in enumerate(keys):
        end = keys[at + 1][1] if at + 1 < len(keys) else close
        end = _back_over_space(raw, end)
        if at + 1 < len(keys):
            end = _back_over_space(raw, end - 1)  # the comma
        _add(spans, name, (key_start, key_end, value_start, end))
    return Members(close, spans, None, 0)


def _back_over_space(raw: bytes, end: int) -> int:
    while raw[end - 1] in _SPACE:
        end -= 1
    return end


def _add(spans: dict[str, Span], name: str, span: Span) -> None:
    if name in spans:
        raise DuplicateKey(name)
    spans[name] = span


def _name(key: bytes) -> str:
    if b"\\" in key:
        decoded: str = orjson.loads(key)
        return decoded
    return key[1:-1].decode()
