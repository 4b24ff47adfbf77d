/* The console's calls to the API: the bearer token of this tab, relative URLs, errors as sentences. */

const TOKEN_KEY = "etl.apiToken";
// The API's root is the folder above /ui/, whatever path prefix an ingress puts in front of it.
const API_ROOT = new URL("../", document.baseURI);
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The token kept for this tab only (sessionStorage); null when signed out. */
export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const keepToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** What to do when the API answers 401 (the console signs out). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** The API's error body as one sentence: {"detail": "..."} or FastAPI's list of problems. */
function describe(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (Array.isArray(detail)) {
    return `${status}: ` + detail.map((d) => `${(d.loc || []).slice(1).join(".")} ${d.msg}`.trim()).join("; ");
  }
  return `${status}: ${detail || "the API answered with an error"}`;
}

/**
 * fetch() a path relative to the API root with the bearer token.
 * Returns {data, total} (total from X-Total-Count); throws ApiError(status, sentence), status 0 when unreachable.
 * options: {method, body (sent as JSON), signingIn (a 401 does not sign out)}.
 */
export async function api(path, options = {}) {
  const current = token();
  // Signed out while a refresh was under way: its remaining calls are not made at all.
  if (!current) throw new ApiError(401, "401: signed out");
  const headers = { Accept: "application/json", Authorization: `Bearer ${current}` };
  const init = { method: options.method || "GET", headers, cache: "no-store", credentials: "omit" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(new URL(path, API_ROOT), init);
  } catch (err) {
    throw new ApiError(0, `the API could not be reached (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && !options.signingIn) onUnauthorized();
    throw new ApiError(response.status, describe(response.status, data));
  }
  return { data, total: Number(response.headers.get("X-Total-Count") || 0) };
}
