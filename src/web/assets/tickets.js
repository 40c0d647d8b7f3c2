// The ticket table: the portal's tickets merged with the grants here
// (ticket_list), with Grant, Test, Revoke and Revoke and Remove per row.

import { call } from './api.js';
import { $, h, setError, busy, confirmDialog, timeLeft, utc, notice } from './dom.js';
import { showPassword } from './panels.js';

/// The seed's labels for the SSH test results.
export const TEST_LABELS = {
  SUCCESS: 'Success',
  TIMEOUT: 'Timeout',
  ESCALATE: 'Escalate',
  AUTH: 'Auth',
  UNREACHABLE: 'Unreachable',
  REFUSED: 'Refused',
  PROTOCOL: 'Protocol',
  ENVIRONMENT: 'Environment',
  UNKNOWN: 'Unknown',
  TICKET_SYSTEM_TIMEOUT: 'Ticket System Timeout',
};

const STATUS_LABELS = { OPEN: 'Open', CLOSED: 'Closed', UNKNOWN: 'Unknown' };

let last = null;
/// Test results by "ticket/server", kept across reloads of the table.
const tests = new Map();
/// Called with the ticket_list data after every load (the portal box).
let listeners = [];
export function onTickets(f) {
  listeners.push(f);
}

function hasGrant(s) {
  return Boolean(s.key_fingerprint || s.auth_time);
}

export async function loadTickets() {
  const err = $('tickets-error');
  try {
    last = await call('ticket_list');
    setError(err, '');
  } catch (e) {
    setError(err, e.reason);
    return;
  }
  render();
  listeners.forEach((f) => f(last));
}

export function render() {
  if (!last) return;
  const body = $('ticket-table').tBodies[0];
  const rows = [];
  let closedWithAccess = false;
  for (const t of last.auths || []) {
    for (const s of t.servers || []) {
      if (t.ticket_status === 'CLOSED' && hasGrant(s)) closedWithAccess = true;
      rows.push(...row(t, s));
    }
  }
  // Keep the keyboard focus on the same button across a re-render.
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.key : undefined;
  body.replaceChildren(...rows);
  if (focused) {
    const again = body.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  $('tickets-empty').hidden = rows.length > 0;
  $('ticket-table').hidden = rows.length === 0;
  $('remove-closed').hidden = !closedWithAccess;
}

function granted(s) {
  // A grant or revoke still being carried out (ticket_list's grant_state).
  if (s.grant_state === 'granting') return h('span', { class: 'badge warn' }, 'Granting…');
  if (s.grant_state === 'revoking') return h('span', { class: 'badge warn' }, 'Revoking…');
  if (s.auth_status === 'AUTHED') {
    return h('span', { class: 'granted' }, h('span', { class: 'badge ok' }, 'Granted'),
      h('span', { class: 'muted small time-left', dataset: { expires: s.expires_at || '' } }, timeLeft(s.expires_at)));
  }
  if (s.auth_status === 'EXPIRED') return h('span', { class: 'badge warn' }, 'Expired');
  return h('span', { class: 'badge' }, 'Not granted');
}

function row(t, s) {
  const id = `${t.ticket_id}/${s.server_num}`;
  const closed = t.ticket_status === 'CLOSED';
  const actions = h('div', { class: 'row-actions' });
  const tr = h('tr', { dataset: { ticket: t.ticket_id, server: s.server_num, user: s.ssh_username } },
    h('td', { 'data-label': 'Ticket' }, h('strong', {}, `#${t.ticket_id}`)),
    h('td', { 'data-label': 'Subject', class: 'subject' }, t.ticket_subject || h('span', { class: 'muted' }, '—')),
    h('td', { 'data-label': 'Server' }, s.server_name ? `${s.server_num} · ${s.server_name}` : String(s.server_num)),
    h('td', { 'data-label': 'User' }, h('code', {}, s.ssh_username || '—')),
    h('td', { 'data-label': 'SSH info' }, h('code', {}, s.ssh || '—')),
    h('td', { 'data-label': 'Granted' }, granted(s)),
    h('td', { 'data-label': 'Ticket status' },
      h('span', { class: `badge ${closed ? 'closed' : ''}` }, STATUS_LABELS[t.ticket_status] || t.ticket_status)),
    h('td', { class: 'actions-cell' }, actions),
  );
  if (!hasGrant(s)) {
    actions.append(h('button', { type: 'button', class: 'btn primary small', dataset: { key: `${id}:grant` }, onclick: (ev) => grant(ev.currentTarget, t, s) }, 'Grant'));
  } else {
    if (!closed) {
      const running = Boolean(tests.get(id) && tests.get(id).running);
      actions.append(h('button', { type: 'button', class: 'btn small', 'aria-disabled': running ? 'true' : undefined, dataset: { key: `${id}:test` }, onclick: () => test(t, s) }, 'Test'));
    }
    actions.append(h('button', {
      type: 'button', class: 'btn danger small', dataset: { key: `${id}:revoke` }, onclick: (ev) => revoke(ev.currentTarget, t, s, closed),
    }, closed ? 'Revoke and Remove' : 'Revoke'));
  }
  const out = [tr];
  const result = tests.get(id);
  if (result) {
    out.push(h('tr', { class: 'detail-row', dataset: { for: id } },
      h('td', { colspan: 8 },
        result.error ? h('p', { class: 'error', role: 'alert' }, result.error) : testView(result))));
  }
  return out;
}

function testView(result) {
  if (result.running) {
    return h('span', { class: 'test-result running', 'aria-busy': 'true' },
      h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Testing the SSH connection…');
  }
  const label = TEST_LABELS[result.result] || result.result;
  const kind = result.result === 'SUCCESS' ? 'ok' : 'bad';
  return h('span', { class: 'test-result' },
    h('span', { class: 'muted' }, 'SSH test: '),
    h('span', { class: `badge ${kind}`, dataset: { result: result.result } }, label),
    result.detail ? h('span', { class: 'detail' }, result.detail) : null,
    result.at ? h('span', { class: 'muted small' }, ` (${utc(result.at)} UTC)`) : null);
}

function key(t, s) {
  return `${t.ticket_id}/${s.server_num}`;
}

function rowError(t, s, message) {
  tests.set(key(t, s), { error: message });
  render();
}

async function grant(button, t, s) {
  await busy(button, 'Granting…', async () => {
    try {
      const data = await call('ticket_grant', { ticket_id: t.ticket_id, server_num: s.server_num });
      tests.delete(key(t, s));
      if (data.wheel_password) showPassword(data.ssh_username, data.wheel_password);
      notice(`Access granted for ticket ${t.ticket_id} (server ${s.server_num}) as ${data.ssh_username}.`);
      await loadTickets();
    } catch (e) {
      rowError(t, s, e.reason);
    }
  });
}

async function test(t, s) {
  const now = tests.get(key(t, s));
  if (now && now.running) return;
  tests.set(key(t, s), { running: true });
  render();
  try {
    const data = await call('ticket_ssh_test', { ticket_id: t.ticket_id, server_num: s.server_num });
    tests.set(key(t, s), { result: data.result, detail: data.detail, at: Date.now() / 1000 });
  } catch (e) {
    tests.set(key(t, s), { error: e.reason });
  }
  render();
}

async function revoke(button, t, s, closed) {
  const what = `ticket ${t.ticket_id}, server ${s.server_num}, user ${s.ssh_username}`;
  const ok = closed
    ? await confirmDialog('Revoke and remove?', `Revoke support's access for the closed ${what} and remove it from this list?`, 'Revoke and Remove')
    : await confirmDialog('Revoke access?', `Revoke support's access for ${what}? Their key is removed and open sessions end.`, 'Revoke');
  if (!ok) return;
  await busy(button, 'Revoking…', async () => {
    try {
      await call('ticket_revoke', { ticket_id: t.ticket_id, server_num: s.server_num, ssh_username: s.ssh_username });
      tests.delete(key(t, s));
      notice(closed ? `Ticket ${t.ticket_id} revoked and removed.` : `Access for ticket ${t.ticket_id} revoked.`);
      await loadTickets();
    } catch (e) {
      rowError(t, s, e.reason);
    }
  });
}

export async function removeClosed(button) {
  const ok = await confirmDialog('Revoke and remove closed tickets?',
    'Revoke support\'s access for every ticket the portal reports closed?', 'Revoke and Remove');
  if (!ok) return;
  await busy(button, 'Revoking…', async () => {
    try {
      const data = await call('ticket_remove_closed');
      notice(`Closed tickets removed (${data.revoked_keys ?? 0} key(s) revoked).`);
      setError($('tickets-error'), '');
    } catch (e) {
      setError($('tickets-error'), e.reason);
    }
    await loadTickets();
  });
}

/// Updates the time left every 30 seconds, in place (no API call, and
/// the keyboard focus stays where it is).
export function tick() {
  setInterval(() => {
    for (const el of document.querySelectorAll('#ticket-table .time-left')) {
      el.textContent = timeLeft(Number(el.dataset.expires) || 0);
    }
  }, 30000);
}
