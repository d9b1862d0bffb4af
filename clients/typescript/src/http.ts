// One place where requests are made: base URL, bearer token, timeouts, and errors turned into
// LifeTalesError.
import { LifeTalesError, type ErrorBody } from "./errors.js";

export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

export interface ClientOptions {
  /** The platform's origin, e.g. `http://localhost:3000` (a trailing `/api` or `/api/v1`, as the
   * frontend's ApiClient has, is accepted). */
  baseUrl: string;
  /** A bearer token; `auth.register`, `auth.login` and `auth.changePassword` replace it. */
  token?: string;
  /** Asked for a token before each request when none is set (say, from your session store). */
  getToken?: TokenSource;
  /** Milliseconds a request may take before it fails with code 0 "Timeout" (default 30 s). */
  timeoutMs?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  query?: Query;
  json?: unknown;
  form?: FormData;
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** This request's own timeout (ms); for a stream, until its headers arrive. */
  timeoutMs?: number;
  /** Statuses besides 2xx that are answers, not errors (say 304). */
  accept?: readonly number[];
}

export interface ApiResponse<T> {
  status: number;
  headers: Headers;
  data: T;
}

const DEFAULT_TIMEOUT_MS = 30_000;

export class Http {
  readonly baseUrl: string;
  private token: string | undefined;
  private readonly getToken: TokenSource | undefined;
  readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "").replace(/\/api(\/v1)?$/, "");
    this.token = options.token;
    this.getToken = options.getToken;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // Bound: some browsers refuse a fetch called with another `this`.
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  setToken(token: string | undefined): void {
    this.token = token;
  }

  /** A request whose JSON answer is returned; any other status than 2xx or `accept` throws. */
  async request<T>(method: string, path: string, options: RequestOptions = {}
  ): Promise<ApiResponse<T>> {
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs);
    const response = await this.send(method, path, options, timeout);
    const text = await response.text().catch((cause: unknown) => {
      throw failure(cause, options.signal, timeout);
    });
    if (!response.ok && !options.accept?.includes(response.status)) {
      throw errorOf(response, text);
    }
    return { status: response.status, headers: response.headers, data: parse(text) as T };
  }

  /** A request whose body is read by the caller (an event stream): the timeout covers only the
   * wait for its headers. */
  async open(path: string, options: RequestOptions = {}): Promise<Response> {
    const connect = new AbortController();
    const timer = setTimeout(() => connect.abort(new DOMException("timed out", "TimeoutError")),
      options.timeoutMs ?? this.timeoutMs);
    try {
      const response = await this.send("GET", path, options, connect.signal);
      if (!response.ok && !options.accept?.includes(response.status)) {
        throw errorOf(response, await response.text().catch(() => ""));
      }
      return response;
    } finally {
      clearTimeout(timer);
    }
  }

  url(path: string, query?: Query): string {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  private async send(method: string, path: string, options: RequestOptions,
                     timeout: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
    const token = this.token ?? (await this.getToken?.()) ?? undefined;
    if (token) headers.Authorization = `Bearer ${token}`;
    let body: BodyInit | undefined;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    } else if (options.form !== undefined) {
      body = options.form; // fetch sets the multipart boundary
    }
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    try {
      return await this.fetchImpl(this.url(path, options.query), { method, headers, body, signal });
    } catch (cause) {
      throw failure(cause, options.signal, timeout);
    }
  }
}

/** The caller's own abort goes through as it is; anything else becomes a LifeTalesError. */
function failure(cause: unknown, signal: AbortSignal | undefined, timeout: AbortSignal): unknown {
  if (signal?.aborted) return signal.reason;
  if (timeout.aborted || (cause instanceof DOMException && cause.name === "TimeoutError")) {
    return new LifeTalesError({ code: 0, status: "Timeout", message: "the request timed out" },
      { cause });
  }
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new LifeTalesError({ code: 0, status: "Network Error", message: reason }, { cause });
}

function errorOf(response: Response, text: string): LifeTalesError {
  const body = parse(text) as Partial<ErrorBody> | undefined;
  const retryAfter = retryAfterSeconds(response.headers);
  return new LifeTalesError({
    code: typeof body?.code === "number" ? body.code : response.status,
    status: typeof body?.status === "string" ? body.status : response.statusText,
    message: typeof body?.message === "string" ? body.message
      : `HTTP ${response.status} ${response.statusText}`.trim(),
    ...(body?.errors ? { errors: body.errors } : {}),
  }, retryAfter === undefined ? {} : { retryAfter });
}

function parse(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not JSON (a proxy's HTML error page): the status speaks for it
  }
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date), if the answer has one. */
export function retryAfterSeconds(headers: Headers): number | undefined {
  const value = headers.get("Retry-After");
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Exponential backoff with full jitter: attempt 1 waits up to `baseMs`, doubling to `capMs`. */
export function backoffMs(attempt: number, baseMs = 500, capMs = 30_000): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
}
