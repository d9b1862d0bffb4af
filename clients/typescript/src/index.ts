// @lifetales/client: the LifeTales platform's typed client.
export { createClient, type LifeTalesClient } from "./client.js";
export { JobFailedError, LifeTalesError, type ErrorBody } from "./errors.js";
export type { EventsOptions } from "./events.js";
export type { ClientOptions, TokenSource } from "./http.js";
export type { JobQuery, WaitOptions } from "./jobs.js";
export type { components, paths } from "./openapi.js";
export * from "./types.js";
