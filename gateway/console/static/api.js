// Calls to the gateway's REST API from the console: the bearer token (kept for this tab),
// JSON in and out, and every failure turned into a readable message with the gRPC status
// and the field violations the API returned.

const TOKEN_KEY = "tfmesh-token";

export class ApiError extends Error {
  constructor(status, code, message, violations) {
    super(message);
    this.status = status;
    this.code = code;
    this.violations = violations;
  }

  get text() {
    const lines = [`${this.code}: ${this.message}`];
    for (const v of this.violations) lines.push(`  ${v.field}: ${v.description}`);
    return lines.join("\n");
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const listeners = [];
export function onUnauthenticated(listener) {
  listeners.push(listener);
}

function headers(extra = {}) {
  const sent = { ...extra };
  if (token()) sent.authorization = `Bearer ${token()}`;
  return sent;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status line says what there is to say.
  }
  const error = body && body.error;
  const violations = [];
  for (const detail of (error && error.details) || []) {
    for (const v of detail.fieldViolations || []) violations.push(v);
  }
  const failed = new ApiError(
    response.status,
    (error && error.status) || `HTTP ${response.status}`,
    (error && error.message) || response.statusText || "request failed",
    violations,
  );
  if (response.status === 401) for (const listener of listeners) listener(failed);
  return failed;
}

export async function call(method, path, body, { raw = false } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = raw ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => call("GET", path);

// Every item of a paged list: `key` of each page, following next_page_token.
export async function getAll(path, key) {
  const items = [];
  let token = "";
  do {
    const separator = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${separator}page_size=1000${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
    items.push(...page[key]);
    token = page.next_page_token;
  } while (token);
  return items;
}

// A JSON document that may not exist: null for 404.
export async function optional(path) {
  try {
    return await get(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

// An NDJSON stream: `onEvent` for each line, until the server ends it or `signal` aborts.
export async function stream(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (line) onEvent(JSON.parse(line));
    }
  }
}

export function messageOf(error) {
  return error instanceof ApiError ? error.text : String(error && error.message ? error.message : error);
}
