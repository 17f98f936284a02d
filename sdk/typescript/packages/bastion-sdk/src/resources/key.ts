import type { KeyStatus, RequestRecord } from "../wire.js";
import type { APIPromise, RequestOptions } from "../core.js";
import { Resource } from "./base.js";

export class Key extends Resource {
  /** `GET /v1/key`: the calling key's limits, budget, spend and requests in flight now. */
  retrieve(options?: RequestOptions): APIPromise<KeyStatus> {
    return this.get("/key", options);
  }
}

export class Requests extends Resource {
  /** `GET /v1/requests/{id}`: the usage record of one request of the key's account, by Bastion's id or
   * the client's own `x-request-id` (a record is written within the ledger's flush interval). */
  retrieve(id: string, options?: RequestOptions): APIPromise<RequestRecord> {
    return this.get(`/requests/${encodeURIComponent(id)}`, options);
  }
}
