/**
 * Bastion's wire types: what its OpenAI-compatible routes accept and answer, as JSON (once the package
 * `@qubi_bastion/shared`; now part of the SDK, so that its declarations resolve with nothing else
 * installed).
 *
 * Types only (the compiled module is empty). Objects carry an index signature where the upstream may
 * add fields Bastion passes through unchanged (vendor extensions, `system_fingerprint`, logprobs...).
 */

/** What every JSON answer carries besides its fields (not enumerable: not part of the JSON). */
export interface AnswerMeta {
  /** The answer's `x-request-id` (the `openai` package's `_request_id`). */
  readonly _request_id?: string | null;
  /** What the request cost, exact decimal USD (`x-bastion-cost-usd`); a stream's is in its record. */
  readonly _cost_usd?: string | null;
}

export type ChatRole = "system" | "developer" | "user" | "assistant" | "tool" | "function";

export interface ChatContentPart {
  type: "text" | "image_url" | "input_audio" | (string & {});
  text?: string;
  image_url?: { url: string; detail?: "auto" | "low" | "high" };
  [field: string]: unknown;
}

export interface ChatToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** A message of a request: any role, text or content parts. */
export interface ChatMessage {
  role: ChatRole;
  content: string | ChatContentPart[] | null;
  name?: string;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  /** OVH GPT-OSS's reasoning channel (OpenAI Responses convention). */
  reasoning?: string;
  /** vLLM's `--enable-reasoning` and DeepSeek-R1's reasoning channel. */
  reasoning_content?: string;
}

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [field: string]: unknown;
}

export type FinishReason = "stop" | "length" | "content_filter" | "tool_calls" | "function_call";

/** The message of an answer: the assistant's, as the `openai` package types it (`content` is text). */
export interface ChatCompletionMessage {
  role: "assistant";
  content: string | null;
  /** Set when the model refused (OpenAI). */
  refusal?: string | null;
  tool_calls?: ChatToolCall[];
  /** OVH GPT-OSS's reasoning channel (OpenAI Responses convention). */
  reasoning?: string;
  /** vLLM's `--enable-reasoning` and DeepSeek-R1's reasoning channel. */
  reasoning_content?: string;
  [field: string]: unknown;
}

export interface ChatChoice {
  index: number;
  message: ChatCompletionMessage;
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

export interface ChatCompletion extends AnswerMeta {
  id: string;
  object: "chat.completion";
  /** Unix seconds. */
  created: number;
  model: string;
  choices: ChatChoice[];
  usage: TokenUsage;
  [field: string]: unknown;
}

export interface ChatToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function?: { name?: string; arguments?: string };
}

export interface ChatChoiceDelta {
  index: number;
  delta: {
    role?: ChatMessage["role"];
    content?: string | null;
    /** OVH GPT-OSS, OpenAI Responses convention. */
    reasoning?: string;
    /** vLLM `--enable-reasoning`, DeepSeek-R1. */
    reasoning_content?: string;
    tool_calls?: ChatToolCallDelta[];
  };
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: ChatChoiceDelta[];
  /** Provider-dependent; some send it only on the final chunk. */
  usage?: TokenUsage | null;
  [field: string]: unknown;
}

export interface CompletionChoice {
  index: number;
  text: string;
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

export interface Completion extends AnswerMeta {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: TokenUsage;
  [field: string]: unknown;
}

export interface Embedding {
  object: "embedding";
  index: number;
  /** Numbers, or a base64 string of little-endian float32 when `encoding_format` is "base64". */
  embedding: number[] | string;
}

export interface CreateEmbeddingResponse extends AnswerMeta {
  object: "list";
  data: Embedding[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

export interface Image {
  url?: string;
  b64_json?: string;
  revised_prompt?: string;
}

export interface ImagesResponse extends AnswerMeta {
  created: number;
  data: Image[];
  [field: string]: unknown;
}

export interface Transcription extends AnswerMeta {
  text: string;
  /** verbose_json only. */
  language?: string;
  duration?: number;
  segments?: unknown[];
  [field: string]: unknown;
}

export interface ResponseObject extends AnswerMeta {
  id: string;
  object: "response";
  created_at: number;
  model: string;
  status?: string;
  output: unknown[];
  /** The concatenated text of the output's text parts, when the upstream sends it. */
  output_text?: string;
  usage?: { input_tokens: number; output_tokens: number; total_tokens: number; [field: string]: unknown };
  [field: string]: unknown;
}

export interface ResponseStreamEvent {
  type: string;
  [field: string]: unknown;
}

export type ModelCategory = "LLM" | "Code" | "Vision" | "Safety" | "Embedding" | "Image" | "Transcription" | "TTS";

export type EndpointKind = "chat" | "completions" | "embeddings" | "images" | "transcription" | "responses" | "tts";

export interface Model extends AnswerMeta {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  /** Bastion's: the model's category. */
  category?: ModelCategory;
  /** Bastion's: the routes the model serves. */
  endpoints?: EndpointKind[];
}

export interface ModelList extends AnswerMeta {
  object: "list";
  data: Model[];
}

/** Every error Bastion answers, from any route; also the payload of a stream's closing error event. */
export interface ErrorEnvelope {
  error: {
    message: string;
    type: string;
    code: string | null;
    param: string | null;
  };
}

/** `GET /v1/requests/{id}`: one request's usage record (a request refused before it was served has none). */
export interface RequestRecord extends AnswerMeta {
  /** Bastion's request id (`req_...`). */
  id: string;
  object: "bastion.request";
  /** The `x-request-id` the client sent, if any. */
  client_request_id: string | null;
  model: string;
  endpoint: EndpointKind;
  /** The status the client was answered (499: the client went away; 500 with `recovered`: a crash). */
  status: number;
  prompt_tokens: number;
  completion_tokens: number;
  /** Images, audio milliseconds or characters, for models not billed by the token. */
  quantity: number;
  unit: string | null;
  /** Exact decimal USD. */
  cost_usd: string;
  cost_nano: number;
  /** The upstream reported no usage: tokens estimated. */
  estimated: boolean;
  /** Settled from its last checkpoint after its gateway instance died mid-answer. */
  recovered: boolean;
  latency_ms: number;
  /** Unix seconds. */
  created: number;
  created_at: string;
}

/** `GET /v1/key`: the calling key's limits, spend and budget now. Money is exact decimal USD. */
export interface KeyStatus extends AnswerMeta {
  object: "bastion.key";
  id: string;
  name: string;
  prefix: string;
  account_id: string;
  rpm: number;
  tpm: number;
  remaining_requests: number;
  remaining_tokens: number;
  reset_requests: string;
  reset_tokens: string;
  budget_usd: string | null;
  budget_period: "total" | "daily" | "weekly" | "monthly" | null;
  /** The budget period's id (`total`, or a day, week or month). */
  period: string;
  period_resets_at: string | null;
  spend_usd: string;
  reserved_usd: string;
  remaining_budget_usd: string | null;
  max_parallel: number | null;
  in_flight: number;
  allowed_models: string[] | null;
  expires_at: string | null;
  account_available_credit_usd: string;
  /** Requests of this key refused before they were served (402, 429, validation) since 00:00 UTC. */
  refused_today: number;
  last_refusal: { code: string; at: string } | null;
  [field: string]: unknown;
}
