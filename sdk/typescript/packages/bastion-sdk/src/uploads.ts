/** Files for multipart uploads: whatever the caller has, as a `Blob` with a file name. */

/** A `File`/`Blob`, bytes, or a stream of bytes (a Node `fs.ReadStream`, a web `ReadableStream`). */
export type Uploadable =
  | Blob
  | Uint8Array
  | ArrayBuffer
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>;

export interface NamedBlob {
  blob: Blob;
  filename: string;
}

export async function toBlob(file: Uploadable, filename?: string): Promise<NamedBlob> {
  const name = filename ?? nameOf(file) ?? "file";
  if (file instanceof Blob) return { blob: file, filename: name };
  if (file instanceof Uint8Array || file instanceof ArrayBuffer) return { blob: new Blob([part(file)]), filename: name };
  const parts: BlobPart[] = [];
  const chunks: AsyncIterable<Uint8Array | string> =
    typeof (file as ReadableStream<Uint8Array>).getReader === "function"
      ? readAll(file as ReadableStream<Uint8Array>)
      : (file as AsyncIterable<Uint8Array | string>);
  for await (const chunk of chunks) parts.push(typeof chunk === "string" ? chunk : part(chunk));
  return { blob: new Blob(parts), filename: name };
}

/** Bytes as a blob part (a view on a SharedArrayBuffer is copied: Blob takes plain buffers only). */
function part(bytes: Uint8Array | ArrayBuffer): BlobPart {
  if (bytes instanceof ArrayBuffer) return bytes;
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

async function* readAll(stream: ReadableStream<Uint8Array>): AsyncIterable<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

function nameOf(file: Uploadable): string | undefined {
  const named = file as { name?: unknown; path?: unknown };
  if (typeof named.name === "string" && named.name) return named.name;
  if (typeof named.path === "string" && named.path) return named.path.split(/[\\/]/).pop();
  return undefined;
}
