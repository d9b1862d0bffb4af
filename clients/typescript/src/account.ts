// The account: sign-up and tokens, saved story settings, the webhook signing secret.
import type { Http } from "./http.js";
import type {
  Credentials, FullStorySettings, PasswordChange, Registered, Token, User,
  WebhookSecret,
} from "./types.js";

export class Auth {
  constructor(private readonly http: Http) {}

  /** Create an account; the client then uses its token. */
  async register(credentials: Credentials): Promise<Registered> {
    return this.keep((await this.http.request<Registered>(
      "POST", "/api/v1/auth/register", { json: credentials })).data);
  }

  /** Exchange email and password for a token; the client then uses it. */
  async login(credentials: Credentials): Promise<Token> {
    return this.keep((await this.http.request<Token>(
      "POST", "/api/v1/auth/token", { json: credentials })).data);
  }

  /** Change the password: every older token stops working; the client uses the new one. */
  async changePassword(change: PasswordChange): Promise<Token> {
    return this.keep((await this.http.request<Token>(
      "POST", "/api/v1/auth/password", { json: change })).data);
  }

  async me(): Promise<User> {
    return (await this.http.request<User>("GET", "/api/v1/me")).data;
  }

  private keep<T extends Token>(token: T): T {
    this.http.setToken(token.accessToken);
    return token;
  }
}

/** The user's saved StorySettings (the defaults until first saved). */
export class Settings {
  constructor(private readonly http: Http) {}

  async get(): Promise<FullStorySettings> {
    return (await this.http.request<FullStorySettings>("GET", "/api/v1/settings")).data;
  }

  /** Replace the saved settings (every field: start from `get()`). */
  async update(settings: FullStorySettings): Promise<FullStorySettings> {
    return (await this.http.request<FullStorySettings>(
      "PUT", "/api/v1/settings", { json: settings })).data;
  }
}

/** The secret that signs this user's job webhooks (README, "Webhooks"). */
export class Webhooks {
  constructor(private readonly http: Http) {}

  async secret(): Promise<WebhookSecret> {
    return (await this.http.request<WebhookSecret>("GET", "/api/v1/webhooks/secret")).data;
  }

  async rotateSecret(): Promise<WebhookSecret> {
    return (await this.http.request<WebhookSecret>(
      "POST", "/api/v1/webhooks/secret/rotate")).data;
  }
}
