import type { Completion } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import type { Stream } from "../streaming.js";
import { Resource } from "./base.js";

export interface CompletionCreateParamsBase {
  model: string;
  prompt: string | string[];
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  echo?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  [field: string]: unknown;
}

export interface CompletionCreateParamsNonStreaming extends CompletionCreateParamsBase {
  stream?: false | null;
}

export interface CompletionCreateParamsStreaming extends CompletionCreateParamsBase {
  stream: true;
}

export type CompletionCreateParams = CompletionCreateParamsNonStreaming | CompletionCreateParamsStreaming;

export class Completions extends Resource {
  /** `POST /v1/completions` (legacy text completions), JSON or a `Stream`. */
  create(params: CompletionCreateParamsStreaming, options?: RequestOptions): APIPromise<Stream<Completion>>;
  create(params: CompletionCreateParamsNonStreaming, options?: RequestOptions): APIPromise<Completion>;
  create(params: CompletionCreateParams, options?: RequestOptions): APIPromise<Completion | Stream<Completion>>;
  create(params: CompletionCreateParams, options?: RequestOptions): APIPromise<Completion | Stream<Completion>> {
    return this.postMaybeStream<Completion, Completion>("/completions", params, options);
  }
}
