// The WHM API 1 calls of the page, and the sign-in kept in sessionStorage
// (never a cookie: a request from another site cannot carry it).

const KEY = 'supportauth.signin';

/// Inside WHM (served by `supportauth whm-cgi` at .../index.cgi/), WHM has
/// signed the administrator in and the CGI calls the daemon as root.
export const inWhm = location.pathname.includes('.cgi/');

export class ApiError extends Error {
  constructor(reason, status, data) {
    super(reason);
    this.reason = reason;
    this.status = status;
    this.data = data;
  }
}

export function signin() {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function saveSignin(user, token) {
  sessionStorage.setItem(KEY, JSON.stringify({ user, token }));
}

export function clearSignin() {
  sessionStorage.removeItem(KEY);
}

/// Called with the reason when the daemon refuses the token (401).
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function encode(params) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) {
      v.forEach((item, i) => body.append(`${k}-${i}`, item));
    } else if (v !== undefined && v !== null && v !== '') {
      body.append(k, String(v));
    }
  }
  return body;
}

/// POSTs `fn` with `params` (arrays become WHM's numbered names) and
/// returns `data`; throws ApiError with the API's `reason` otherwise.
export async function call(fn, params = {}, given = undefined) {
  const creds = given === undefined ? signin() : given;
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  if (!inWhm) {
    if (!creds) throw new ApiError('Not signed in.', 401);
    headers.Authorization = `whm ${creds.user}:${creds.token}`;
  }
  let resp;
  try {
    resp = await fetch(`json-api/${encodeURIComponent(fn)}?api.version=1`, {
      method: 'POST',
      headers,
      body: encode(params),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(`Cannot reach supportauth: ${e.message}.`, 0);
  }
  let json = null;
  try {
    json = await resp.json();
  } catch {
    throw new ApiError(`supportauth answered HTTP ${resp.status} without JSON.`, resp.status);
  }
  const meta = json && json.metadata ? json.metadata : {};
  if (resp.status === 401 && given === undefined) onUnauthorized(meta.reason);
  if (resp.status !== 200 || meta.result !== 1) {
    throw new ApiError(meta.reason || `HTTP ${resp.status}`, resp.status, json.data);
  }
  return json.data || {};
}
