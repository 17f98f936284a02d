import type { Transcription } from "../wire.js";
import { type APIPromise, call, json, type RequestOptions, text } from "../core.js";
import { toBlob, type Uploadable } from "../uploads.js";
import { Resource } from "./base.js";

export interface TranscriptionCreateParamsBase {
  /** The audio: a `File`/`Blob`, bytes, or a stream (a Node `fs.createReadStream(...)`). */
  file: Uploadable;
  model: string;
  /** The file name sent (default: the file's own name, else "file"). */
  filename?: string;
  language?: string;
  prompt?: string;
  temperature?: number;
  timestamp_granularities?: ("word" | "segment")[];
  [field: string]: unknown;
}

export interface TranscriptionCreateParamsJson extends TranscriptionCreateParamsBase {
  response_format?: "json" | "verbose_json";
}

export interface TranscriptionCreateParamsText extends TranscriptionCreateParamsBase {
  response_format: "text" | "srt" | "vtt";
}

export type TranscriptionCreateParams = TranscriptionCreateParamsJson | TranscriptionCreateParamsText;

export class Transcriptions extends Resource {
  /** `POST /v1/audio/transcriptions` (multipart): a `Transcription`, or the text of text/srt/vtt. */
  create(params: TranscriptionCreateParamsText, options?: RequestOptions): APIPromise<string>;
  create(params: TranscriptionCreateParamsJson, options?: RequestOptions): APIPromise<Transcription>;
  create(params: TranscriptionCreateParams, options?: RequestOptions): APIPromise<Transcription | string>;
  create(params: TranscriptionCreateParams, options?: RequestOptions): APIPromise<Transcription | string> {
    const asText = ["text", "srt", "vtt"].includes(String(params.response_format));
    const body = form(params);
    const url = this.client.url("/audio/transcriptions");
    // The form is made before the request: `call` needs a body it can send again on a retry.
    const spec = body.then((data) => ({ method: "POST" as const, url, body: data }));
    const parse = asText ? text : json<Transcription>;
    return call<Transcription | string>(this.client, spec, options, parse);
  }
}

export class Audio {
  readonly transcriptions: Transcriptions;

  constructor(client: ConstructorParameters<typeof Transcriptions>[0]) {
    this.transcriptions = new Transcriptions(client);
  }
}

/** The fields first and the file last, so Bastion knows the model before the file and streams it on. */
async function form(params: TranscriptionCreateParams): Promise<FormData> {
  const { file, filename, ...fields } = params;
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined || value === null) continue;
    if (Array.isArray(value)) {
      for (const item of value) data.append(`${name}[]`, String(item));
    } else {
      data.append(name, typeof value === "object" ? JSON.stringify(value) : String(value));
    }
  }
  const named = await toBlob(file, filename);
  data.append("file", named.blob, named.filename);
  return data;
}
