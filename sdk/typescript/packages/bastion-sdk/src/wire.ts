/**
 * Bastion's wire types: what its OpenAI-compatible routes accept and answer, as JSON.
 *
 * Types only (the compiled module is empty). Objects carry an index signature where the upstream may
 * add fields Bastion passes through unchanged (vendor extensions, `system_fingerprint`, logprobs...).
 */

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

export interface ChatChoice {
  index: number;
  message: ChatMessage;
  finish_reason: FinishReason | null;
  logprobs?: unknown;
}

export interface ChatCompletion {
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

export interface Completion {
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

export interface CreateEmbeddingResponse {
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

export interface ImagesResponse {
  created: number;
  data: Image[];
  [field: string]: unknown;
}

export interface Transcription {
  text: string;
  /** verbose_json only. */
  language?: string;
  duration?: number;
  segments?: unknown[];
  [field: string]: unknown;
}

export interface ResponseObject {
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

export interface Model {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  /** Bastion's: the model's category. */
  category?: ModelCategory;
  /** Bastion's: the routes the model serves. */
  endpoints?: EndpointKind[];
}

export interface ModelList {
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
