import type { ImagesResponse } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import { Resource } from "./base.js";

export interface ImageGenerateParams {
  model: string;
  prompt: string;
  n?: number | null;
  size?: string | null;
  quality?: string | null;
  response_format?: "url" | "b64_json" | null;
  style?: string | null;
  user?: string;
  [field: string]: unknown;
}

export class Images extends Resource {
  /** `POST /v1/images/generations`. */
  generate(params: ImageGenerateParams, options?: RequestOptions): APIPromise<ImagesResponse> {
    return this.post("/images/generations", params, options);
  }
}
