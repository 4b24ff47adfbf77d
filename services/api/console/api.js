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

/** True for the error of a request cancelled by its panel (the view changed): nothing to show. */
export const isAbort = (err) => err && err.name === "AbortError";

// What a person does about each kind of answer; the API's own words follow.
const NEXT_STEP = {
  401: "The API refused the token; sign in again",
  404: "Not found",
  409: "Not ready yet",
  422: "The API did not accept these values",
  429: "Too many requests; wait a moment and try again",
  500: "The API failed (its log has the details)",
  503: "The API is not ready (no run has been loaded yet, or Redis is down)",
};

/** The API's error body as one sentence: {"detail": "..."} or FastAPI's list of problems {loc, msg}. */
function describe(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  const lead = NEXT_STEP[status] || `The API answered ${status}`;
  if (Array.isArray(detail)) {
    const problems = detail.map((d) => {
      const where = (d.loc || []).slice(1).join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    });
    return `${lead}: ${problems.join("; ")}.`;
  }
  if (status === 400 && detail) return `${detail[0].toUpperCase()}${detail.slice(1)}.`;
  return detail ? `${lead}: ${detail}.` : `${lead}.`;
}

/** The URL of an API path (relative to the API root). */
export const apiUrl = (path) => new URL(path, API_ROOT);

/**
 * fetch() a path relative to the API root with the bearer token.
 * Returns the Response when it is ok; throws ApiError(status, sentence), status 0 when unreachable,
 * or the AbortError of options.signal. options: {method, body (sent as JSON), signingIn, signal, accept}.
 */
export async function request(path, options = {}) {
  const current = token();
  // Signed out while a refresh was under way: its remaining calls are not made at all.
  if (!current) throw new ApiError(401, "Signed out.");
  const headers = { Accept: options.accept || "application/json", Authorization: `Bearer ${current}` };
  const init = { method: options.method || "GET", headers, cache: "no-store", credentials: "omit" };
  if (options.signal) init.signal = options.signal;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path), init);
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, `The API could not be reached (${err.message}); check that it is running and try again.`);
  }
  if (!response.ok) {
    const text = await response.text();
    let data = text;
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: the text as it is
    }
    if (response.status === 401 && !options.signingIn) onUnauthorized();
    throw new ApiError(response.status, describe(response.status, data));
  }
  return response;
}

/** request() a JSON answer: {data, total} (total from X-Total-Count). */
export async function api(path, options = {}) {
  const response = await request(path, options);
  const text = await response.text();
  return { data: text ? JSON.parse(text) : null, total: Number(response.headers.get("X-Total-Count") || 0) };
}
