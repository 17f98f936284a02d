/**
 * `new Bastion({ baseURL, apiKey, ... })`: the client, shaped like the `openai` package's, so code
 * ports by changing the import and the base URL.
 */

import { BastionError } from "./errors.js";
import type { CallSpec, HeadersInput, Transport } from "./core.js";
import { Audio } from "./resources/audio.js";
import { Chat } from "./resources/chat.js";
import { Completions } from "./resources/completions.js";
import { Embeddings } from "./resources/embeddings.js";
import { Images } from "./resources/images.js";
import { Key, Requests } from "./resources/key.js";
import { Models } from "./resources/models.js";
import { Responses } from "./resources/responses.js";
import { Tts } from "./resources/tts.js";

export const VERSION = "0.1.0";
export const DEFAULT_BASE_URL = "https://api.qubittron.ai/v1";

export interface ClientOptions {
  /** Bastion's base URL, ending in `/v1` (default: `QUBITTRON_BASE_URL`, else `BASTION_BASE_URL`, else
   * the hosted gateway). */
  baseURL?: string | undefined;
  /** A `qbt_` key (default: `QUBITTRON_API_KEY`, else `BASTION_API_KEY`). */
  apiKey?: string | undefined;
  /** Milliseconds to wait for an answer's head (default 10 minutes). */
  timeout?: number | undefined;
  /** Retries of a failed request (default 2). */
  maxRetries?: number | undefined;
  /** Headers sent with every request. */
  defaultHeaders?: HeadersInput | undefined;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch | undefined;
}

export class Bastion implements Transport {
  readonly baseURL: string;
  readonly apiKey: string;
  readonly timeout: number;
  readonly maxRetries: number;
  readonly fetch: typeof fetch;
  private readonly defaultHeaders: HeadersInput;

  readonly chat: Chat;
  readonly completions: Completions;
  readonly embeddings: Embeddings;
  readonly images: Images;
  readonly audio: Audio;
  readonly responses: Responses;
  readonly models: Models;
  /** The calling key's limits, budget and spend (`GET /v1/key`). */
  readonly key: Key;
  /** Usage records of the key's account (`GET /v1/requests/{id}`). */
  readonly requests: Requests;
  /** NVIDIA Riva's text to speech (`POST /api/v1/tts/text_to_audio`), which the `openai` package cannot call. */
  readonly tts: Tts;

  constructor(options: ClientOptions = {}) {
    const apiKey = options.apiKey ?? env("QUBITTRON_API_KEY") ?? env("BASTION_API_KEY");
    if (!apiKey) {
      throw new BastionError(
        "Bastion needs an API key: set QUBITTRON_API_KEY (or BASTION_API_KEY), or pass it:" +
          " new Bastion({ apiKey: 'qbt_...' }).",
      );
    }
    this.apiKey = apiKey;
    const baseURL = options.baseURL ?? env("QUBITTRON_BASE_URL") ?? env("BASTION_BASE_URL") ?? DEFAULT_BASE_URL;
    if (!/^https?:\/\//.test(baseURL)) {
      throw new BastionError(
        `Bastion's base URL must start with http:// or https:// (got '${baseURL}'): set QUBITTRON_BASE_URL` +
          " (or BASTION_BASE_URL), or pass it: new Bastion({ baseURL: 'https://.../v1' }).",
      );
    }
    this.baseURL = baseURL.replace(/\/+$/, "");
    this.timeout = options.timeout ?? 600_000;
    this.maxRetries = options.maxRetries ?? 2;
    this.defaultHeaders = options.defaultHeaders ?? {};
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") {
      throw new BastionError("No fetch: run on Node 18+ (or any runtime with fetch), or pass options.fetch.");
    }
    this.fetch = (input, init) => fetchImpl(input, init); // unbound: some runtimes' fetch needs its global
    this.chat = new Chat(this);
    this.completions = new Completions(this);
    this.embeddings = new Embeddings(this);
    this.images = new Images(this);
    this.audio = new Audio(this);
    this.responses = new Responses(this);
    this.models = new Models(this);
    this.key = new Key(this);
    this.requests = new Requests(this);
    this.tts = new Tts(this);
  }

  /** The URL of `path` under the base URL (`/chat/completions`), or under its root for `/api/...`. */
  url(path: string): string {
    if (path.startsWith("/api/")) return this.baseURL.replace(/\/v1$/, "") + path;
    return this.baseURL + path;
  }

  headers(extra: HeadersInput | undefined, spec: CallSpec): Headers {
    const headers = new Headers({
      authorization: `Bearer ${this.apiKey}`,
      accept: spec.accept ?? (spec.stream ? "text/event-stream" : "application/json"),
      "x-bastion-sdk": `typescript/${VERSION}`,
    });
    if (spec.body !== undefined) headers.set("content-type", "application/json");
    for (const given of [this.defaultHeaders, extra ?? {}]) {
      for (const [name, value] of Object.entries(given)) {
        if (value === null) headers.delete(name);
        else if (value !== undefined) headers.set(name, value);
      }
    }
    return headers;
  }
}

function env(name: string): string | undefined {
  const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const value = process?.env?.[name]?.trim();
  return value ? value : undefined;
}
