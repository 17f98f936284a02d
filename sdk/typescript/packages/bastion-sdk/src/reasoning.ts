/**
 * The reasoning channels of the SDK reference: `delta.reasoning` (OVH GPT-OSS), `delta.reasoning_content`
 * (vLLM, DeepSeek-R1), and `<think>...</think>` inline in the content (Qwen3 on stock vLLM).
 */

export interface Reasoned {
  reasoning?: string | null | undefined;
  reasoning_content?: string | null | undefined;
}

/** The reasoning of a delta or message: `reasoning ?? reasoning_content`. */
export function reasoningOf(delta: Reasoned | null | undefined): string | undefined {
  return delta?.reasoning ?? delta?.reasoning_content ?? undefined;
}

export interface ThinkParts {
  /** The text inside `<think>...</think>` (joined when there are several). */
  reasoning: string;
  /** The text outside them: the answer. */
  content: string;
}

const OPEN = "<think>";
const CLOSE = "</think>";

/** Splits a whole text; an unclosed `<think>` runs to the end (the answer was cut while thinking). */
export function splitThink(text: string): ThinkParts {
  const splitter = new ThinkSplitter();
  const head = splitter.push(text);
  const tail = splitter.flush();
  return { reasoning: head.reasoning + tail.reasoning, content: head.content + tail.content };
}

/**
 * The same split for a stream, chunk by chunk: a tag cut across two chunks (`"<thi"` then `"nk>"`) is
 * held back until it is known, and nothing else is.
 */
export class ThinkSplitter {
  private thinking = false;
  private pending = "";

  push(chunk: string): ThinkParts {
    const parts: ThinkParts = { reasoning: "", content: "" };
    let text = this.pending + chunk;
    this.pending = "";
    for (;;) {
      const tag = this.thinking ? CLOSE : OPEN;
      const at = text.indexOf(tag);
      if (at >= 0) {
        this.emit(parts, text.slice(0, at));
        this.thinking = !this.thinking;
        text = text.slice(at + tag.length);
        continue;
      }
      const keep = partialTagAtEnd(text, tag);
      this.emit(parts, text.slice(0, text.length - keep));
      this.pending = text.slice(text.length - keep);
      return parts;
    }
  }

  /** What was held back, at the end of the stream. */
  flush(): ThinkParts {
    const parts: ThinkParts = { reasoning: "", content: "" };
    this.emit(parts, this.pending);
    this.pending = "";
    return parts;
  }

  private emit(parts: ThinkParts, text: string): void {
    if (this.thinking) parts.reasoning += text;
    else parts.content += text;
  }
}

/** The length of the longest end of `text` that begins `tag`. */
function partialTagAtEnd(text: string, tag: string): number {
  for (let length = Math.min(tag.length - 1, text.length); length > 0; length--) {
    if (tag.startsWith(text.slice(text.length - length))) return length;
  }
  return 0;
}
