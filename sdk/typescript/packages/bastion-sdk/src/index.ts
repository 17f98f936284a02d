/**
 * @qubittron/bastion-sdk: Bastion's TypeScript client.
 *
 * ```ts
 * import Bastion from "@qubittron/bastion-sdk";
 * const client = new Bastion({ baseURL: "https://api.qubittron.ai/v1", apiKey: process.env.QUBITTRON_API_KEY });
 * ```
 */

import { Bastion } from "./client.js";

export { Bastion, DEFAULT_BASE_URL, VERSION } from "./client.js";
export type { ClientOptions } from "./client.js";
export { APIPromise } from "./core.js";
export type { RateLimitInfo, RequestOptions, WithResponse } from "./core.js";
export {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  BastionError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  UnprocessableEntityError,
  UpstreamError,
} from "./errors.js";
export { SSEParser, Stream } from "./streaming.js";
export type { ServerSentEvent } from "./streaming.js";
export { reasoningOf, splitThink, ThinkSplitter } from "./reasoning.js";
export type { Reasoned, ThinkParts } from "./reasoning.js";
export type { Uploadable } from "./uploads.js";
export type {
  ChatCompletionCreateParams,
  ChatCompletionCreateParamsBase,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
  ChatTool,
} from "./resources/chat.js";
export type {
  CompletionCreateParams,
  CompletionCreateParamsNonStreaming,
  CompletionCreateParamsStreaming,
} from "./resources/completions.js";
export type { EmbeddingCreateParams } from "./resources/embeddings.js";
export type { ImageGenerateParams } from "./resources/images.js";
export type { ResponseCreateParams } from "./resources/responses.js";
export type { TranscriptionCreateParams } from "./resources/audio.js";
export { AudioEncoding } from "./resources/tts.js";
export type { SpeechAudio, TextToAudioParams } from "./resources/tts.js";
export { ModelsPage, PagePromise } from "./resources/models.js";
export { Key, Requests } from "./resources/key.js";
export type {
  ChatChoice,
  AnswerMeta,
  ChatChoiceDelta,
  ChatCompletion,
  ChatCompletionMessage,
  ChatCompletionChunk,
  ChatContentPart,
  ChatMessage,
  ChatRole,
  ChatToolCall,
  Completion,
  CreateEmbeddingResponse,
  Embedding,
  EndpointKind,
  ErrorEnvelope,
  FinishReason,
  KeyStatus,
  RequestRecord,
  Image,
  ImagesResponse,
  Model,
  ModelCategory,
  ModelList,
  ResponseObject,
  ResponseStreamEvent,
  TokenUsage,
  Transcription,
} from "./wire.js";

export default Bastion;
