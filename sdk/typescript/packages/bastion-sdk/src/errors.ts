/**
 * Every error the SDK throws is a `BastionError`. HTTP answers map to a class by status (and, for a
 * stream's closing error event, by Bastion's error code), like the `openai` package's classes.
 *
 * `instanceof` is answered by a brand, not by prototype identity, so an error thrown by the ESM build is
 * an instance of the CommonJS build's classes too (an app can load both: the dual-package hazard).
 */

import type { ErrorEnvelope } from "./wire.js";

const BRAND = Symbol.for("@qubittron/bastion-sdk/error-classes");

type Branded = { [BRAND]?: readonly string[] };

export class BastionError extends Error {
  /** HTTP status (for a stream's error event: the status Bastion's code stands for). */
  readonly status: number | undefined;
  readonly code: string | null;
  readonly type: string | null;
  readonly param: string | null;
  readonly requestId: string | null;
  readonly headers: Headers;
  /** The error envelope's `error` object, as Bastion sent it. */
  readonly error: ErrorEnvelope["error"] | undefined;

  constructor(
    message: string,
    details: {
      status?: number | undefined;
      error?: ErrorEnvelope["error"] | undefined;
      headers?: Headers | undefined;
      cause?: unknown;
    } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.status = details.status;
    this.error = details.error;
    this.code = details.error?.code ?? null;
    this.type = details.error?.type ?? null;
    this.param = details.error?.param ?? null;
    this.headers = details.headers ?? new Headers();
    this.requestId = this.headers.get("x-request-id");
    this.name = new.target.name;
    const classes: string[] = [];
    let klass: unknown = new.target;
    while (typeof klass === "function" && klass !== Error) {
      classes.push(klass.name);
      klass = Object.getPrototypeOf(klass);
    }
    Object.defineProperty(this, BRAND, { value: Object.freeze(classes), enumerable: false });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== "object" || value === null) return false;
    const classes = (value as Branded)[BRAND];
    return Array.isArray(classes) ? classes.includes(this.name) : false;
  }
}

/** An HTTP answer that is an error (or a stream's error event); the specific classes extend it. */
export class APIError extends BastionError {}
export class BadRequestError extends APIError {}
export class AuthenticationError extends APIError {}
/** 402 (the account's credit, or the key's budget, cannot cover the request) and 403. */
export class PermissionDeniedError extends APIError {}
export class NotFoundError extends APIError {}
export class ConflictError extends APIError {}
export class UnprocessableEntityError extends APIError {}
export class RateLimitError extends APIError {
  /** Seconds to wait, from `Retry-After` (or `retry-after-ms`); null when Bastion gave none. */
  readonly retryAfter: number | null;

  constructor(message: string, details: ConstructorParameters<typeof BastionError>[1] = {}) {
    super(message, details);
    this.retryAfter = retryAfterSeconds(this.headers);
  }
}
/** The model's provider failed (502 `upstream_error`), or Bastion cannot serve now (503). */
export class UpstreamError extends APIError {}
export class InternalServerError extends APIError {}

/** No HTTP answer: the connection failed. */
export class APIConnectionError extends BastionError {
  constructor(message = "Connection error.", cause?: unknown) {
    super(message, { cause });
  }
}
export class APIConnectionTimeoutError extends APIConnectionError {
  constructor(message = "Request timed out.") {
    super(message);
  }
}
/** The caller's `AbortSignal` (or `stream.controller`) ended the request. */
export class APIUserAbortError extends BastionError {
  constructor(message = "Request was aborted.") {
    super(message);
  }
}

type ErrorClass = new (message: string, details: ConstructorParameters<typeof BastionError>[1]) => APIError;

const BY_STATUS: Record<number, ErrorClass> = {
  400: BadRequestError,
  401: AuthenticationError,
  402: PermissionDeniedError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: BadRequestError,
  422: UnprocessableEntityError,
  429: RateLimitError,
  431: BadRequestError,
  502: UpstreamError,
};

/** The status a Bastion error code stands for: how a stream's error event (sent after a 200) maps. */
const STATUS_OF_CODE: Record<string, number> = {
  invalid_request: 400,
  model_not_found: 400,
  invalid_api_key: 401,
  insufficient_funds: 402,
  key_budget_exceeded: 402,
  not_found: 404,
  request_too_large: 413,
  rate_limit_exceeded: 429,
  upstream_error: 502,
  service_unavailable: 503,
  internal_error: 500,
};

export function errorFor(
  status: number,
  body: unknown,
  headers: Headers,
  fallbackMessage?: string,
): APIError {
  const envelope = asEnvelope(body);
  const message = envelope?.message ?? fallbackMessage ?? `${status} status code (no body)`;
  const details = { status, error: envelope, headers };
  if (status === 503 && (envelope?.code === "service_unavailable" || envelope === undefined)) {
    return new UpstreamError(message, details);
  }
  const klass = BY_STATUS[status] ?? (status >= 500 ? InternalServerError : APIError);
  return new klass(message, details);
}

/** The error of a stream's `data: {"error": {...}}` event. */
export function streamErrorFor(payload: unknown, headers: Headers): APIError {
  const envelope = asEnvelope(payload);
  const status = (envelope?.code && STATUS_OF_CODE[envelope.code]) || 500;
  return errorFor(status, payload, headers, "The stream ended with an error.");
}

function asEnvelope(body: unknown): ErrorEnvelope["error"] | undefined {
  if (typeof body !== "object" || body === null || !("error" in body)) return undefined;
  const error = (body as { error: unknown }).error;
  if (typeof error !== "object" || error === null) return undefined;
  const fields = error as Record<string, unknown>;
  const text = (value: unknown): string | null => (typeof value === "string" ? value : null);
  return {
    message: text(fields.message) ?? "Unknown error.",
    type: text(fields.type) ?? "",
    code: text(fields.code),
    param: text(fields.param),
  };
}

/** Seconds from `retry-after-ms` or `Retry-After` (seconds, or an HTTP date); null if absent. */
export function retryAfterSeconds(headers: Headers): number | null {
  const ms = Number.parseFloat(headers.get("retry-after-ms") ?? "");
  if (Number.isFinite(ms)) return ms / 1000;
  const value = headers.get("retry-after");
  if (value === null) return null;
  const seconds = Number.parseFloat(value);
  if (Number.isFinite(seconds)) return seconds;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, (date - Date.now()) / 1000) : null;
}
