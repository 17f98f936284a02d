"""A multipart upload (`/v1/audio/transcriptions`), relayed upstream while it arrives.

The form fields before the file are read first (they are small, and the OpenAI SDKs send them first),
so the model is known when the file starts: the file then goes upstream chunk by chunk, never held whole.
If the model only comes after the file, the file is spooled (1 MiB in memory, the rest on disk) until the
model is known. Every part is written upstream as the client sent it, but for the `model` value.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO

from bastion.api.asgi import Receive, Scope, body_chunks, declared_length, header
from bastion.errors import invalid_request
from bastion.proxy.multipart import MultipartReader, PartHead, boundary_of

MAX_FIELD_BYTES = 64 * 1024
SPOOL_IN_MEMORY = 1024 * 1024
COPY_BLOCK = 256 * 1024
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# Fields Bastion decides on (routing and billing, how the answer is read): sent twice, Bastion and the
# upstream could each take a different one. Others may repeat (`timestamp_granularities[]`).
SINGLE_FIELDS = frozenset({"model", "response_format"})


class Upload:
    def __init__(self, reader: MultipartReader, boundary: bytes, size: int) -> None:
        self.reader = reader
        self.boundary = boundary
        self.size = size  # declared by the client (or the limit): what admission reserves for
        self.before: list[tuple[PartHead, bytes]] = []
        self.after: list[tuple[PartHead, bytes]] = []  # read before forwarding only when spooling
        self.file: PartHead | None = None
        self.spool: IO[bytes] | None = None

    @classmethod
    async def open(cls, scope: Scope, receive: Receive, limit: int) -> Upload:
        boundary = boundary_of(header(scope, b"content-type"))
        declared = declared_length(scope, limit)
        size = declared if declared is not None else limit
        upload = cls(MultipartReader(body_chunks(receive, limit), boundary), boundary, size)
        await upload._read_form()
        return upload

    async def _read_form(self) -> None:
        while (head := await self.reader.next_part()) is not None:
            if head.filename is None:
                self._refuse_repeated(head)
                (self.after if self.file else self.before).append(
                    (head, await self.reader.read_part(MAX_FIELD_BYTES))
                )
                continue
            if self.file is not None or head.name != "file":
                raise invalid_request("Send exactly one file, in the form field 'file'.", "file")
            self.file = head
            if "model" in self.form:
                return  # stream the file straight through
            self.spool = await self._spool_file()
        if self.file is None:
            raise invalid_request("Missing required parameter: 'file'.", "file")

    async def _spool_file(self) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed in body()
        async for chunk in self.reader.part_data():
            spool.write(chunk)
        spool.seek(0)
        return spool

    @property
    def form(self) -> dict[str, str]:
        """The text fields read so far."""
        try:
            return {head.name: value.decode("utf-8") for head, value in (*self.before, *self.after)}
        except UnicodeDecodeError:
            raise invalid_request("A form field is not UTF-8 text.") from None

    def check(self) -> str:
        """The model, once the fields make sense."""
        form = self.form
        model = form.get("model", "").strip()
        if not model:
            raise invalid_request("Missing required parameter: 'model'.", "model")
        response_format = form.get("response_format")
        if response_format is not None and response_format not in RESPONSE_FORMATS:
            raise invalid_request(
                f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)}.", "response_format"
            )
        temperature = form.get("temperature")
        if temperature is not None:
            try:
                float(temperature)
            except ValueError:
                raise invalid_request("'temperature' must be a number.", "temperature") from None
        return model

    async def body(self, upstream_model: str) -> AsyncIterator[bytes]:
        """The multipart body for the upstream, produced as the client's arrives."""
        model = upstream_model.encode()
        for head, value in self.before:
            yield self._part(head, model if head.name == "model" else value)
        assert self.file is not None
        yield b"--" + self.boundary + b"\r\n" + self.file.raw + b"\r\n\r\n"
        if self.spool is not None:
            with self.spool:
                while block := self.spool.read(COPY_BLOCK):
                    yield block
        else:
            async for chunk in self.reader.part_data():
                yield chunk
        yield b"\r\n"
        for head, value in self.after:
            yield self._part(head, model if head.name == "model" else value)
        while (head := await self.reader.next_part()) is not None:
            if head.filename is not None:
                raise invalid_request("Send exactly one file, in the form field 'file'.", "file")
            self._refuse_repeated(head)
            value = await self.reader.read_part(MAX_FIELD_BYTES)
            self.after.append((head, value))
            yield self._part(head, model if head.name == "model" else value)
        yield b"--" + self.boundary + b"--\r\n"

    def _refuse_repeated(self, head: PartHead) -> None:
        if head.name in SINGLE_FIELDS and any(
            seen.name == head.name for seen, _ in (*self.before, *self.after)
        ):
            raise invalid_request(f"The form field '{head.name}' is sent more than once.", head.name)

    def _part(self, head: PartHead, value: bytes) -> bytes:
        return b"--" + self.boundary + b"\r\n" + head.raw + b"\r\n\r\n" + value + b"\r\n"
