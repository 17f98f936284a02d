import type { Bastion } from "../client.js";
import { type APIPromise, call, json, type RequestOptions } from "../core.js";
import { Stream } from "../streaming.js";

export abstract class Resource {
  constructor(protected readonly client: Bastion) {}

  protected get<T>(path: string, options?: RequestOptions): APIPromise<T> {
    return call(this.client, { method: "GET", url: this.client.url(path) }, options, json<T>);
  }

  protected post<T>(path: string, body: unknown, options?: RequestOptions): APIPromise<T> {
    return call(this.client, { method: "POST", url: this.client.url(path), body }, options, json<T>);
  }

  /** A JSON answer, or (`"stream": true`) a `Stream` of the answer's events. */
  protected postMaybeStream<T, Chunk>(
    path: string,
    body: { stream?: boolean | null | undefined },
    options?: RequestOptions,
  ): APIPromise<T | Stream<Chunk>> {
    if (body.stream !== true) return this.post<T>(path, body, options);
    const spec = { method: "POST" as const, url: this.client.url(path), body, stream: true };
    return call(this.client, spec, options, async (answer) => new Stream<Chunk>(answer.response, answer.controller));
  }
}
