import type { CreateEmbeddingResponse } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import { Resource } from "./base.js";

export interface EmbeddingCreateParams {
  model: string;
  /** A string, strings, or token arrays. */
  input: string | string[] | number[] | number[][];
  encoding_format?: "float" | "base64";
  dimensions?: number;
  user?: string;
  [field: string]: unknown;
}

export class Embeddings extends Resource {
  /** `POST /v1/embeddings`. */
  create(params: EmbeddingCreateParams, options?: RequestOptions): APIPromise<CreateEmbeddingResponse> {
    return this.post("/embeddings", params, options);
  }
}
