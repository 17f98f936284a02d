import type { ResponseObject, ResponseStreamEvent } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import type { Stream } from "../streaming.js";
import { Resource } from "./base.js";

export interface ResponseCreateParamsBase {
  model: string;
  input: string | unknown[];
  instructions?: string | null;
  max_output_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  tools?: unknown[];
  /** Bastion is stateless: `false` is sent unless set (anything else is refused by Bastion). */
  store?: false;
  [field: string]: unknown;
}

export interface ResponseCreateParamsNonStreaming extends ResponseCreateParamsBase {
  stream?: false | null;
}

export interface ResponseCreateParamsStreaming extends ResponseCreateParamsBase {
  stream: true;
}

export type ResponseCreateParams = ResponseCreateParamsNonStreaming | ResponseCreateParamsStreaming;

export class Responses extends Resource {
  /** `POST /v1/responses`, stateless (`store: false`); with `stream: true` a `Stream` of its events. */
  create(params: ResponseCreateParamsStreaming, options?: RequestOptions): APIPromise<Stream<ResponseStreamEvent>>;
  create(params: ResponseCreateParamsNonStreaming, options?: RequestOptions): APIPromise<ResponseObject>;
  create(
    params: ResponseCreateParams,
    options?: RequestOptions,
  ): APIPromise<ResponseObject | Stream<ResponseStreamEvent>>;
  create(
    params: ResponseCreateParams,
    options?: RequestOptions,
  ): APIPromise<ResponseObject | Stream<ResponseStreamEvent>> {
    const body = "store" in params ? params : { ...params, store: false };
    return this.postMaybeStream<ResponseObject, ResponseStreamEvent>("/responses", body, options);
  }
}
