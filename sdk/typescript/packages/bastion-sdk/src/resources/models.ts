import type { Model, ModelList } from "../wire.js";
import { APIPromise, json, type RequestOptions, send } from "../core.js";
import { Resource } from "./base.js";

/** `models.list()`'s answer: the list, which a `for await` also walks. */
export class ModelsPage implements AsyncIterable<Model> {
  readonly object: "list";
  readonly data: Model[];

  constructor(list: ModelList) {
    this.object = list.object;
    this.data = list.data;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Model> {
    yield* this.data;
  }
}

/** A promise of the page that is itself iterable: `for await (const model of client.models.list())`. */
export class PagePromise extends APIPromise<ModelsPage> implements AsyncIterable<Model> {
  async *[Symbol.asyncIterator](): AsyncIterator<Model> {
    yield* (await this).data;
  }
}

export class Models extends Resource {
  /** `GET /v1/models`: the models the key may use. */
  list(options?: RequestOptions): PagePromise {
    const answer = send(this.client, { method: "GET", url: this.client.url("/models") }, options ?? {});
    return new PagePromise(answer, async (a) => new ModelsPage(await json<ModelList>(a)));
  }

  /** `GET /v1/models/{id}`. */
  retrieve(id: string, options?: RequestOptions): APIPromise<Model> {
    return this.get(`/models/${encodeURIComponent(id)}`, options);
  }
}
