// Shared helpers of the UI's pages: the page's API token, JSON calls to Keel, the message area.
// Data from the server or from a model is only ever set with textContent, never as HTML.

const tokenMeta = document.querySelector('meta[name="keel-token"]');
const token = tokenMeta ? tokenMeta.content : "";

/** Request headers with the page's API token (none in open mode). */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** An error answered by Keel; `message` comes from its OpenAI-shaped body. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The message of an error response: `error.message` of the body, else the status line. */
export async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    // not JSON (a proxy's HTML page, say): fall through to the status
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

/** Call a JSON route; resolves to the decoded body, rejects with ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: authHeaders(), credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response.status === 204 ? null : response.json();
}

/** `/api/v1/prompts/<name>/<rest...>` with every part URL-encoded. */
export function promptPath(name, ...rest) {
  return ["/api/v1/prompts", ...[name, ...rest].map(encodeURIComponent)].join("/");
}

/** Show one message (kind "error" or "info") in the page's message area. */
export function showMessage(text, kind = "error") {
  const box = document.getElementById("messages");
  const line = document.createElement("p");
  line.className = kind;
  line.textContent = text;
  box.replaceChildren(line);
  box.hidden = false;
}

/** Empty the message area. */
export function clearMessages() {
  const box = document.getElementById("messages");
  box.replaceChildren();
  box.hidden = true;
}
