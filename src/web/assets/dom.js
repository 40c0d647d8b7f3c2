// Small DOM helpers: building elements without innerHTML (no markup is
// ever built from data), errors next to what caused them, the confirmation
// dialog, and time formatting.

export const $ = (id) => document.getElementById(id);

/// h('td', {class: 'x', dataset: {ticket: 1}}, 'text', child...)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'onclick') el.addEventListener('click', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function show(el, on = true) {
  el.hidden = !on;
}

/// Shows `message` in the error element `el` (hidden when empty).
export function setError(el, message) {
  el.textContent = message || '';
  el.hidden = !message;
}

/// Marks the form field the API's reason names (“ticket_id”, ...) invalid.
export function markFields(form, reason) {
  for (const input of form.querySelectorAll('[name]')) {
    const named = reason && reason.includes(`“${input.name}”`);
    if (named) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

/// Disables `button` and marks it busy while `work` runs.
export async function busy(button, label, work) {
  const before = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (label) button.textContent = label;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = before;
  }
}

/// The confirmation window: resolves true on OK, false on Cancel/Escape.
export function confirmDialog(title, text, okLabel = 'OK') {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

/// "2 d 3 h", "5 h 12 m", "4 m", "expired".
export function timeLeft(expiresAt, now = Date.now() / 1000) {
  if (!expiresAt) return 'no expiry';
  let s = Math.floor(expiresAt - now);
  if (s <= 0) return 'expired';
  const d = Math.floor(s / 86400);
  s %= 86400;
  const hr = Math.floor(s / 3600);
  s %= 3600;
  const m = Math.max(1, Math.floor(s / 60));
  if (d > 0) return `${d} d ${hr} h left`;
  if (hr > 0) return `${hr} h ${m} m left`;
  return `${m} m left`;
}

export function utc(epochOrText) {
  const d = typeof epochOrText === 'number' ? new Date(epochOrText * 1000) : new Date(epochOrText);
  if (Number.isNaN(d.getTime())) return String(epochOrText);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '');
}

export function notice(text) {
  const el = $('notice');
  el.textContent = text;
  el.hidden = !text;
}
