import { type APIPromise, bytes, call, type RequestOptions } from "../core.js";
import { Resource } from "./base.js";

/** Riva's audio encodings. */
export const AudioEncoding = { LINEAR_PCM: 1, FLAC: 2, MULAW: 3, OGGOPUS: 4, ALAW: 20 } as const;

export interface TextToAudioParams {
  text: string;
  language_code: string;
  voice_name: string;
  sample_rate_hz?: number;
  /** Riva's: 1 LINEAR_PCM, 2 FLAC, 3 MULAW, 4 OGGOPUS, 20 ALAW (see `AudioEncoding`). */
  encoding?: number;
  /** A TTS model (default: the first one that serves TTS). */
  model?: string;
  [field: string]: unknown;
}

export interface SpeechAudio {
  audio: Uint8Array;
  contentType: string;
  requestId: string | null;
}

export class Tts extends Resource {
  /** `POST /api/v1/tts/text_to_audio`: the upstream's audio bytes and their content type. */
  textToAudio(params: TextToAudioParams, options?: RequestOptions): APIPromise<SpeechAudio> {
    const spec = {
      method: "POST" as const,
      url: this.client.url("/api/v1/tts/text_to_audio"),
      body: params,
      accept: "audio/wav, application/octet-stream, */*",
    };
    return call(this.client, spec, options, async (answer) => ({
      audio: await bytes(answer),
      contentType: answer.response.headers.get("content-type") ?? "application/octet-stream",
      requestId: answer.response.headers.get("x-request-id"),
    }));
  }
}
