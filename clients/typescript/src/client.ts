// createClient: one object with a property per resource of the API.
import { Auth, Settings, Webhooks } from "./account.js";
import { Admin, Batches } from "./admin.js";
import { Films, Narrations } from "./films.js";
import { Illustrations, Stories, Transcriptions } from "./generation.js";
import { type ClientOptions, Http } from "./http.js";
import { Jobs } from "./jobs.js";
import { Notes, Spaces } from "./spaces.js";

export interface LifeTalesClient {
  readonly baseUrl: string;
  readonly auth: Auth;
  readonly settings: Settings;
  readonly spaces: Spaces;
  readonly notes: Notes;
  readonly stories: Stories;
  readonly illustrations: Illustrations;
  readonly transcriptions: Transcriptions;
  readonly films: Films;
  readonly narrations: Narrations;
  readonly jobs: Jobs;
  readonly webhooks: Webhooks;
  /** Admins only. */
  readonly batches: Batches;
  /** Admins only. */
  readonly admin: Admin;
  /** Use this bearer token from now on (`undefined`: ask `getToken` again). */
  setToken(token: string | undefined): void;
}

export function createClient(options: ClientOptions): LifeTalesClient {
  const http = new Http(options);
  return {
    baseUrl: http.baseUrl,
    auth: new Auth(http),
    settings: new Settings(http),
    spaces: new Spaces(http),
    notes: new Notes(http),
    stories: new Stories(http),
    illustrations: new Illustrations(http),
    transcriptions: new Transcriptions(http),
    films: new Films(http),
    narrations: new Narrations(http),
    jobs: new Jobs(http),
    webhooks: new Webhooks(http),
    batches: new Batches(http),
    admin: new Admin(http),
    setToken: (token) => http.setToken(token),
  };
}
