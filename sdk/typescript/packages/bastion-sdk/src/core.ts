/**
 * One API call: the request, its retries, and the promise of its parsed answer.
 *
 * Retries follow the `openai` package: connection errors, 408, 409, 429 and 5xx are retried up to
 * `maxRetries` times with exponential backoff (0.5 s doubling to 8 s, up to 25 % less at random), or
 * after the server's `retry-after-ms` / `Retry-After` when it gives one under a minute; Bastion's
 * `x-should-retry` header overrides the status (it says `false` for a 402 on an exhausted balance). A
 * stream is retried only before its answer arrives, never once a byte of it was received.
 */

import {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIUserAbortError,
  BastionError,
  errorFor,
  retryAfterSeconds,
} from "./errors.js";

export type HeadersInput = Record<string, string | null | undefined>;

export interface RequestOptions {
  /** Cancels the request at any point (a stream too); the call rejects with `APIUserAbortError`. */
  signal?: AbortSignal | undefined;
  /** Milliseconds to wait for the answer's head (default: the client's `timeout`). */
  timeout?: number | undefined;
  /** Extra headers for this request; `null` removes a default one. */
  headers?: HeadersInput | undefined;
  /** Retries for this request (default: the client's `maxRetries`). */
  maxRetries?: number | undefined;
}

export interface RateLimitInfo {
  limitRequests: number | null;
  remainingRequests: number | null;
  resetRequests: string | null;
  limitTokens: number | null;
  remainingTokens: number | null;
  resetTokens: string | null;
}

export interface WithResponse<T> {
  data: T;
  response: Response;
  requestId: string | null;
  rateLimit: RateLimitInfo;
}

/** What one call sends. `body` is JSON-encoded unless it is already a `FormData`. */
export interface CallSpec {
  method: "GET" | "POST";
  url: string;
  body?: unknown;
  stream?: boolean;
  /** The `Accept` header (default: JSON, or event streams when `stream`). */
  accept?: string;
}

export interface Transport {
  fetch: typeof fetch;
  headers(extra: HeadersInput | undefined, spec: CallSpec): Headers;
  timeout: number;
  maxRetries: number;
}

export interface Answer {
  response: Response;
  controller: AbortController;
}

/** A Promise of the parsed answer that also gives the raw `Response` (`withResponse`, `asResponse`). */
export class APIPromise<T> extends Promise<T> {
  private parsed: Promise<T> | undefined;

  constructor(
    private readonly answer: Promise<Answer>,
    private readonly parse: (answer: Answer) => Promise<T>,
  ) {
    super((resolve) => resolve(undefined as T));
  }

  // `then` on a subclass would build another APIPromise through the constructor: plain promises instead.
  static override get [Symbol.species](): PromiseConstructor {
    return Promise;
  }

  /** The raw response; its body is left unread. */
  asResponse(): Promise<Response> {
    return this.answer.then((answer) => answer.response);
  }

  /** The parsed answer with the response, its request id and its rate-limit headers. */
  async withResponse(): Promise<WithResponse<T>> {
    const [data, answer] = await Promise.all([this.value(), this.answer]);
    const response = answer.response;
    return { data, response, requestId: response.headers.get("x-request-id"), rateLimit: rateLimitOf(response.headers) };
  }

  private value(): Promise<T> {
    this.parsed ??= this.answer.then(this.parse);
    return this.parsed;
  }

  override then<TResult1 = T, TResult2 = never>(
    onfulfilled?: ((value: T) => TResult1 | PromiseLike<TResult1>) | null,
    onrejected?: ((reason: unknown) => TResult2 | PromiseLike<TResult2>) | null,
  ): Promise<TResult1 | TResult2> {
    return this.value().then(onfulfilled, onrejected);
  }

  override catch<TResult = never>(
    onrejected?: ((reason: unknown) => TResult | PromiseLike<TResult>) | null,
  ): Promise<T | TResult> {
    return this.value().catch(onrejected);
  }

  override finally(onfinally?: (() => void) | null): Promise<T> {
    return this.value().finally(onfinally);
  }
}

export function call<T>(
  transport: Transport,
  spec: CallSpec | Promise<CallSpec>,
  options: RequestOptions | undefined,
  parse: (answer: Answer) => Promise<T>,
): APIPromise<T> {
  return new APIPromise(send(transport, spec, options ?? {}), parse);
}

/** The request, retried as the module says, up to an answer that is not an error. */
export async function send(
  transport: Transport,
  pending: CallSpec | Promise<CallSpec>,
  options: RequestOptions,
): Promise<Answer> {
  const spec = await pending;
  const maxRetries = options.maxRetries ?? transport.maxRetries;
  const headers = transport.headers(options.headers, spec);
  const body = encode(spec.body, headers);
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) headers.set("x-bastion-retry-count", String(attempt));
    const controller = new AbortController();
    const stopLinking = link(options.signal, controller);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, options.timeout ?? transport.timeout);
    let response: Response;
    try {
      response = await transport.fetch(spec.url, { method: spec.method, headers, body, signal: controller.signal });
    } catch (error) {
      clearTimeout(timer);
      stopLinking();
      if (options.signal?.aborted) throw new APIUserAbortError();
      if (attempt < maxRetries) {
        await sleep(backoffSeconds(attempt), options.signal);
        continue;
      }
      if (timedOut) throw new APIConnectionTimeoutError();
      throw new APIConnectionError(
        `Connection error: ${spec.url} could not be reached (the base URL comes from \`baseURL\`, else` +
          " QUBITTRON_BASE_URL or BASTION_BASE_URL).",
        error,
      );
    }
    clearTimeout(timer);
    if (response.ok) {
      if (!spec.stream) stopLinking(); // a stream keeps the caller's signal until it ends
      return { response, controller };
    }
    stopLinking();
    if (attempt < maxRetries && shouldRetry(response)) {
      await response.body?.cancel().catch(() => undefined);
      await sleep(retryDelaySeconds(response.headers, attempt), options.signal);
      continue;
    }
    throw await errorOf(response);
  }
}

function encode(body: unknown, headers: Headers): BodyInit | undefined {
  if (body === undefined) return undefined;
  if (body instanceof FormData) {
    headers.delete("content-type"); // fetch writes the multipart boundary
    return body;
  }
  return JSON.stringify(body);
}

/** The caller's signal aborts the request's controller too; returns what unlinks them. */
function link(signal: AbortSignal | undefined, controller: AbortController): () => void {
  if (signal === undefined) return () => undefined;
  if (signal.aborted) {
    controller.abort();
    return () => undefined;
  }
  const abort = (): void => controller.abort();
  signal.addEventListener("abort", abort, { once: true });
  return () => signal.removeEventListener("abort", abort);
}

function shouldRetry(response: Response): boolean {
  const told = response.headers.get("x-should-retry");
  if (told === "true") return true;
  if (told === "false") return false;
  const status = response.status;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

function retryDelaySeconds(headers: Headers, attempt: number): number {
  const given = retryAfterSeconds(headers);
  return given !== null && given >= 0 && given < 60 ? given : backoffSeconds(attempt);
}

function backoffSeconds(attempt: number): number {
  return Math.min(0.5 * 2 ** attempt, 8) * (1 - Math.random() * 0.25);
}

function sleep(seconds: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new APIUserAbortError());
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new APIUserAbortError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, seconds * 1000);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function errorOf(response: Response): Promise<BastionError> {
  const text = await response.text().catch(() => "");
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return errorFor(response.status, body, response.headers, text ? text.slice(0, 500) : undefined);
}

export function rateLimitOf(headers: Headers): RateLimitInfo {
  const number = (name: string): number | null => {
    const value = Number.parseInt(headers.get(name) ?? "", 10);
    return Number.isFinite(value) ? value : null;
  };
  return {
    limitRequests: number("x-ratelimit-limit-requests"),
    remainingRequests: number("x-ratelimit-remaining-requests"),
    resetRequests: headers.get("x-ratelimit-reset-requests"),
    limitTokens: number("x-ratelimit-limit-tokens"),
    remainingTokens: number("x-ratelimit-remaining-tokens"),
    resetTokens: headers.get("x-ratelimit-reset-tokens"),
  };
}

/** The answer's JSON, with the request id as a non-enumerable `_request_id` (the `openai` package's) and
 * the request's cost as `_cost_usd` (`x-bastion-cost-usd`, exact decimal USD), both from its headers. */
export async function json<T>(answer: Answer): Promise<T> {
  const value = JSON.parse(await text(answer)) as unknown;
  if (typeof value === "object" && value !== null) {
    const headers = answer.response.headers;
    for (const [field, header] of [
      ["_request_id", "x-request-id"],
      ["_cost_usd", "x-bastion-cost-usd"],
    ] as const) {
      Object.defineProperty(value, field, {
        value: headers.get(header),
        enumerable: false,
        writable: true,
        configurable: true,
      });
    }
  }
  return value as T;
}

export async function text(answer: Answer): Promise<string> {
  try {
    return await answer.response.text();
  } catch (error) {
    throw readFailure(answer, error);
  }
}

export async function bytes(answer: Answer): Promise<Uint8Array> {
  try {
    return new Uint8Array(await answer.response.arrayBuffer());
  } catch (error) {
    throw readFailure(answer, error);
  }
}

function readFailure(answer: Answer, error: unknown): BastionError {
  if (answer.controller.signal.aborted) return new APIUserAbortError();
  return new APIConnectionError("The connection failed while the answer was read.", error);
}
