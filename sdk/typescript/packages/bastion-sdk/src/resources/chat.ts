import type { ChatCompletion, ChatCompletionChunk, ChatMessage } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import type { Stream } from "../streaming.js";
import { Resource } from "./base.js";

export interface ChatTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export interface ChatCompletionCreateParamsBase {
  /** Any model id that serves chat (see `models.list`). */
  model: string;
  messages: ChatMessage[];
  temperature?: number | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  tools?: ChatTool[];
  tool_choice?: "none" | "auto" | "required" | { type: "function"; function: { name: string } };
  parallel_tool_calls?: boolean;
  response_format?: { type: "text" | "json_object" | "json_schema"; json_schema?: Record<string, unknown> };
  stream_options?: { include_usage?: boolean } | null;
  reasoning_effort?: "low" | "medium" | "high" | (string & {});
  user?: string;
  /** Any other field is sent unchanged (vendor extensions, newer OpenAI fields). */
  [field: string]: unknown;
}

export interface ChatCompletionCreateParamsNonStreaming extends ChatCompletionCreateParamsBase {
  stream?: false | null;
}

export interface ChatCompletionCreateParamsStreaming extends ChatCompletionCreateParamsBase {
  stream: true;
}

export type ChatCompletionCreateParams = ChatCompletionCreateParamsNonStreaming | ChatCompletionCreateParamsStreaming;

export class ChatCompletions extends Resource {
  /** `POST /v1/chat/completions`: a `ChatCompletion`, or with `stream: true` a `Stream` of chunks. */
  create(params: ChatCompletionCreateParamsStreaming, options?: RequestOptions): APIPromise<Stream<ChatCompletionChunk>>;
  create(params: ChatCompletionCreateParamsNonStreaming, options?: RequestOptions): APIPromise<ChatCompletion>;
  create(
    params: ChatCompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<ChatCompletion | Stream<ChatCompletionChunk>>;
  create(
    params: ChatCompletionCreateParams,
    options?: RequestOptions,
  ): APIPromise<ChatCompletion | Stream<ChatCompletionChunk>> {
    return this.postMaybeStream<ChatCompletion, ChatCompletionChunk>("/chat/completions", params, options);
  }
}

export class Chat {
  readonly completions: ChatCompletions;

  constructor(client: ConstructorParameters<typeof ChatCompletions>[0]) {
    this.completions = new ChatCompletions(client);
  }
}
