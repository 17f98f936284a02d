"""A streaming multipart/form-data reader: parts come out in order, a file part's bytes as they arrive.

Only a delimiter's length of bytes is held back between reads (a boundary may straddle two reads), so
an upload passes through in constant memory however large it is. Headers are kept as received, so a
part can be written back out unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bastion.errors import ApiError, invalid_request

MAX_HEADER_BYTES = 16 * 1024
_NAME = re.compile(rb'(?i)(?:^|;)\s*name="([^"]*)"')
_FILENAME = re.compile(rb'(?i)(?:^|;)\s*filename="([^"]*)"')


@dataclass(frozen=True, slots=True)
class PartHead:
    raw: bytes  # the part's header lines, as received, without the blank line
    name: str
    filename: str | None  # set for a file part


def boundary_of(content_type: bytes | None) -> bytes:
    if content_type is None or not content_type.lower().startswith(b"multipart/form-data"):
        raise invalid_request("Content-Type must be multipart/form-data with a boundary.")
    match = re.search(rb'(?i)boundary="?([^";]+)"?', content_type)
    if match is None or not 1 <= len(match.group(1)) <= 70:
        raise invalid_request("The multipart Content-Type has no valid boundary.")
    return match.group(1)


class MultipartReader:
    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes) -> None:
        self._chunks = chunks
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b"\r\n"  # so the first boundary line matches the delimiter too
        self._in_part = False
        self._started = False
        self.finished = False

    async def _more(self) -> None:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            raise invalid_request("The multipart body ended before its closing boundary.") from None
        self._buffer += chunk

    async def next_part(self) -> PartHead | None:
        """The next part's head, or None after the closing boundary; skips the rest of the current part."""
        if self.finished:
            return None
        if self._in_part:
            async for _ in self.part_data():
                pass
        elif not self._started:  # the preamble: everything before the first boundary
            while (start := self._buffer.find(self._delimiter)) < 0:
                self._buffer = self._buffer[-len(self._delimiter) :]
                await self._more()
            self._buffer = self._buffer[start + len(self._delimiter) :]
        self._started = True
        while len(self._buffer) < 2:
            await self._more()
        if self._buffer.startswith(b"--"):
            self.finished = True
            return None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise invalid_request("A multipart part has headers over 16 KiB.")
            await self._more()
        raw = self._buffer[:end].removeprefix(b"\r\n")
        self._buffer = self._buffer[end + 4 :]
        self._in_part = True
        return _head(raw)

    async def part_data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive."""
        keep = len(self._delimiter) - 1
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                if at:
                    yield self._buffer[:at]
                self._buffer = self._buffer[at + len(self._delimiter) :]
                self._in_part = False
                return
            if len(self._buffer) > keep:
                yield self._buffer[:-keep]
                self._buffer = self._buffer[-keep:]
            await self._more()

    async def read_part(self, limit: int) -> bytes:
        data = b""
        async for chunk in self.part_data():
            data += chunk
            if len(data) > limit:
                raise ApiError(
                    413, "request_too_large", "invalid_request_error", f"A form field is over {limit} bytes."
                )
        return data


def _head(raw: bytes) -> PartHead:
    disposition = next(
        (
            line.split(b":", 1)[1]
            for line in raw.split(b"\r\n")
            if line.lower().startswith(b"content-disposition:")
        ),
        None,
    )
    if disposition is None:
        raise invalid_request("A multipart part has no Content-Disposition header.")
    name = _NAME.search(disposition)
    if name is None:
        raise invalid_request("A multipart part has no name.")
    filename = _FILENAME.search(disposition)
    return PartHead(
        raw,
        name.group(1).decode("utf-8", "replace"),
        filename.group(1).decode("utf-8", "replace") if filename else None,
    )
