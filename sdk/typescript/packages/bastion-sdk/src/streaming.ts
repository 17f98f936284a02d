/**
 * Server-sent events, parsed as they arrive, and `Stream<T>`: an async iterable of the JSON `data:`
 * events of one response.
 *
 * The parser follows the SSE spec's line rules (LF, CRLF or CR line ends, `:` comments, multi-line
 * `data:`), whatever the network's read boundaries. `data: [DONE]` ends a stream and is consumed; a
 * `data: {"error": ...}` event throws the matching `BastionError`. Leaving a `for await` loop early
 * (`break`, `return`, a thrown error) cancels the body and aborts the request, so the connection closes
 * and Bastion closes the upstream's.
 */

import { APIConnectionError, APIUserAbortError, BastionError, streamErrorFor } from "./errors.js";

export interface ServerSentEvent {
  event: string | null;
  data: string;
  id: string | null;
}

/** Turns text into events: feed it decoded text as it arrives, then `end()`. */
export class SSEParser {
  private buffer = "";
  private data: string[] = [];
  private event: string | null = null;
  private id: string | null = null;
  private sawCR = false;

  feed(text: string): ServerSentEvent[] {
    const events: ServerSentEvent[] = [];
    let start = 0;
    let at = 0;
    if (this.sawCR && text.startsWith("\n")) {
      start = at = 1; // the LF of a CRLF split between two reads
    }
    this.sawCR = false;
    for (; at < text.length; at++) {
      const char = text.charCodeAt(at);
      if (char !== 10 && char !== 13) continue;
      this.line(this.buffer + text.slice(start, at), events);
      this.buffer = "";
      if (char === 13) {
        if (at + 1 < text.length) {
          if (text.charCodeAt(at + 1) === 10) at++;
        } else {
          this.sawCR = true;
        }
      }
      start = at + 1;
    }
    this.buffer += text.slice(start);
    return events;
  }

  end(): ServerSentEvent[] {
    const events: ServerSentEvent[] = [];
    if (this.buffer) this.line(this.buffer, events);
    this.buffer = "";
    this.line("", events);
    return events;
  }

  private line(line: string, events: ServerSentEvent[]): void {
    if (line === "") {
      if (this.data.length > 0 || this.event !== null) {
        events.push({ event: this.event, data: this.data.join("\n"), id: this.id });
      }
      this.data = [];
      this.event = null;
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
  }
}

/** The events of a byte stream, decoded as UTF-8 across read boundaries. */
export async function* events(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.feed(decoder.decode(value, { stream: true }));
    }
    yield* parser.feed(decoder.decode());
    yield* parser.end();
  } finally {
    // Early exit (break, error): cancelling the body closes the connection.
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

export class Stream<T> implements AsyncIterable<T> {
  /** Aborts the request at any point: the connection closes, iteration throws `APIUserAbortError`. */
  readonly controller: AbortController;
  readonly response: Response;
  readonly requestId: string | null;
  private consumed = false;

  constructor(response: Response, controller: AbortController) {
    this.response = response;
    this.controller = controller;
    this.requestId = response.headers.get("x-request-id");
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.consumed) throw new BastionError("Cannot iterate over a consumed stream.");
    this.consumed = true;
    const body = this.response.body;
    if (body === null) throw new BastionError("The response has no body to stream.");
    let finished = false;
    try {
      for await (const event of events(body)) {
        if (event.data === "[DONE]") {
          finished = true;
          return;
        }
        if (event.data === "") continue;
        const parsed = this.parse(event);
        if (parsed !== undefined) yield parsed;
      }
      finished = true;
    } catch (error) {
      throw this.failure(error);
    } finally {
      if (!finished) this.controller.abort(); // left early: the request is over
    }
  }

  private parse(event: ServerSentEvent): T | undefined {
    let value: unknown;
    try {
      value = JSON.parse(event.data);
    } catch {
      throw new BastionError(`The stream sent an event that is not JSON: ${event.data.slice(0, 200)}`);
    }
    if (isErrorEvent(value)) throw streamErrorFor(value, this.response.headers);
    return value as T;
  }

  private failure(error: unknown): unknown {
    if (error instanceof BastionError) return error;
    if (this.controller.signal.aborted) return new APIUserAbortError();
    return new APIConnectionError("The stream's connection failed.", error);
  }
}

/** Bastion's closing error event, `{"error": {...}}` (a chunk or a Responses API event has other keys). */
function isErrorEvent(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  const fields = value as Record<string, unknown>;
  return typeof fields.error === "object" && fields.error !== null && !("choices" in fields) && !("type" in fields);
}
