// The boxes around the ticket table: the portal connection, support IPs
// and firewall whitelists, the local grant form and the one-time password,
// the kill switch, and the audit log.

import { call } from './api.js';
import { $, h, setError, markFields, busy, confirmDialog, utc, notice } from './dom.js';

// ---- Customer Portal -------------------------------------------------

const PORTAL_STATES = {
  CONNECTED: ['Connected', 'ok', 'This server is connected to the portal: your tickets are listed below.'],
  NOT_CONNECTED: ['Not connected', '', 'Connect this server to the portal to see your tickets and grant access from them.'],
  UNREACHABLE: ['Unreachable', 'bad', 'The portal cannot be reached right now; grants made here keep working.'],
};

let authorizeUrl = '';

/// Updates the portal box from ticket_list's `ticket_system`.
export function showPortal(list) {
  const state = list.ticket_system || 'NOT_CONNECTED';
  const [label, kind, text] = PORTAL_STATES[state] || [state, '', ''];
  const pill = $('portal-state');
  pill.textContent = label;
  pill.className = `pill ${kind}`;
  pill.dataset.state = state;
  $('portal-text').textContent = list.ticket_system_error ? `${text} (${list.ticket_system_error})` : text;
  $('portal-login').textContent = state === 'NOT_CONNECTED' ? 'Log in to cPanel Customer Portal' : 'Log in to cPanel Customer Portal again';
}

/// Support IPs and the portal's authorization page (ticket_portal_status).
export async function loadPortalStatus() {
  try {
    const data = await call('ticket_portal_status');
    authorizeUrl = data.authorize_url;
    const ips = data.support_ips || [];
    $('support-ips').replaceChildren(...(ips.length
      ? ips.map((ip) => h('li', { class: 'chip' }, h('code', {}, ip)))
      : [h('li', { class: 'muted' }, 'None configured (access.support_ips).')]));
    setError($('firewall-error'), data.support_ips_error ? `The portal's list could not be read: ${data.support_ips_error}` : '');
  } catch (e) {
    setError($('firewall-error'), e.reason);
  }
}

function redirectUri() {
  return new URL('oauth2-callback', location.href).href;
}

/// "Log in to cPanel Customer Portal": the portal's authorization window;
/// its `code` comes back through oauth2-callback on a BroadcastChannel.
export function portalLogin() {
  const err = $('portal-error');
  if (!authorizeUrl) {
    setError(err, 'The portal address is not known yet; reload the page.');
    return;
  }
  const url = new URL(authorizeUrl);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('redirect_uri', redirectUri());
  const popup = window.open(url.href, 'supportauth-portal', 'popup,width=520,height=680');
  if (!popup) setError(err, 'The browser blocked the authorization window; allow pop-ups for this page.');
}

export function listenForCode(afterConnect) {
  const channel = new BroadcastChannel('supportauth-oauth2');
  channel.addEventListener('message', async (ev) => {
    const err = $('portal-error');
    if (!ev.data || typeof ev.data.code !== 'string') {
      setError(err, ev.data && ev.data.error ? `The portal did not authorize this server: ${ev.data.error}` : 'The portal sent no code.');
      return;
    }
    try {
      await call('ticket_validate_oauth2_code', { code: ev.data.code, redirect_uri: redirectUri() });
      setError(err, '');
      notice('Connected to the cPanel Customer Portal.');
      await afterConnect();
    } catch (e) {
      setError(err, e.reason);
    }
  });
}

// ---- Firewall whitelists --------------------------------------------

const BACKENDS = {
  chain_status: 'Firewall rules (nftables / iptables / firewalld)',
  csf_wl_status: 'CSF',
  hulk_wl_status: 'cPHulk',
  host_access_wl_status: 'hosts.allow',
};
const PROBLEMS = {
  NO: ['In order', 'ok'],
  NEED_SETUP: ['Needs set up', 'warn'],
  NEED_UNSETUP: ['Needs removal', 'warn'],
};

function showWhitelist(data) {
  const rows = Object.entries(data)
    .filter(([k]) => k.endsWith('_status'))
    .map(([k, v]) => h('tr', { dataset: { backend: k } },
      h('td', {}, BACKENDS[k] || k),
      h('td', {}, h('span', { class: `badge ${v === 'ACTIVE' ? 'ok' : v.startsWith('ERR') ? 'bad' : ''}` }, v))));
  $('whitelist-table').tBodies[0].replaceChildren(...(rows.length
    ? rows : [h('tr', {}, h('td', { colspan: 2, class: 'muted' }, 'No firewall backend is configured.'))]));
  if (data.problem) {
    const [label, kind] = PROBLEMS[data.problem] || [data.problem, ''];
    const pill = $('firewall-problem');
    pill.textContent = label;
    pill.className = `pill ${kind}`;
  }
}

export async function loadWhitelist() {
  try {
    showWhitelist(await call('ticket_whitelist_check'));
  } catch (e) {
    setError($('firewall-error'), e.reason);
  }
}

export async function whitelist(button, fn) {
  await busy(button, null, async () => {
    const err = $('firewall-error');
    try {
      showWhitelist(await call(fn));
      setError(err, '');
    } catch (e) {
      if (e.data) showWhitelist(e.data);
      setError(err, e.reason);
    }
    await loadWhitelist();
  });
}

// ---- Local grant and the one-time password --------------------------

export function showPassword(user, password) {
  $('password-user').textContent = user;
  $('password-value').textContent = password;
  $('password-box').hidden = false;
  $('password-copy').focus();
}

export function forgetPassword() {
  $('password-value').textContent = '';
  $('password-user').textContent = '';
  $('password-box').hidden = true;
}

export async function copyPassword(button) {
  try {
    await navigator.clipboard.writeText($('password-value').textContent);
    button.textContent = 'Copied';
  } catch {
    // No clipboard (plain HTTP on another host): select it for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents($('password-value'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    button.textContent = 'Selected: press Ctrl+C';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 3000);
}

export async function readKeyFile(input) {
  const file = input.files && input.files[0];
  if (!file) return;
  if (file.size > 16384) {
    setError($('grant-error'), `${file.name} is too large for an SSH public key.`);
    return;
  }
  $('grant-key').value = (await file.text()).trim();
  $('grant-key-file-name').textContent = file.name;
}

export async function submitGrant(form, afterGrant) {
  const f = new FormData(form);
  const ttl = Math.round(Number(f.get('ttl')) * Number(f.get('ttl_unit')));
  const ips = String(f.get('access_ips') || '').split(/[\s,]+/).filter(Boolean);
  const params = {
    ticket_id: String(f.get('ticket_id')).trim(),
    server_num: String(f.get('server_num')).trim(),
    ssh_key: String(f.get('ssh_key')).trim(),
    ssh_username: String(f.get('ssh_username')).trim(),
    ttl: Number.isFinite(ttl) && ttl > 0 ? ttl : '',
    access_ip: ips,
  };
  const err = $('grant-error');
  await busy($('grant-submit'), 'Granting…', async () => {
    try {
      const data = await call('ticket_grant', params);
      setError(err, '');
      markFields(form, '');
      form.reset();
      $('grant-key-file-name').textContent = '';
      notice(`Access granted for ticket ${data.ticket_id} as ${data.ssh_username} until ${utc(data.expires_at)} UTC.`);
      if (data.wheel_password) showPassword(data.ssh_username, data.wheel_password);
      await afterGrant();
    } catch (e) {
      setError(err, e.reason);
      markFields(form, e.reason);
    }
  });
}

// ---- Kill switch ------------------------------------------------------

export async function revokeAll(button, afterRevoke) {
  const ok = await confirmDialog('Revoke all access?',
    'Every grant on this server is revoked now: support keys, temporary users and whitelists.', 'Revoke all');
  if (!ok) return;
  await busy(button, 'Revoking…', async () => {
    const err = $('killswitch-error');
    try {
      const data = await call('ticket_revoke_all');
      setError(err, '');
      notice(`Kill switch: ${data.revoked_keys ?? 0} key(s) revoked.`);
    } catch (e) {
      setError(err, e.reason);
    }
    await afterRevoke();
  });
}

// ---- Audit log ----------------------------------------------------------

export async function loadAudit(form) {
  const f = new FormData(form);
  const since = String(f.get('since') || '');
  const params = {
    ticket_id: String(f.get('ticket_id') || '').trim(),
    event: f.get('event'),
    // datetime-local is the browser's local time.
    since: since ? Math.floor(new Date(since).getTime() / 1000) : '',
    limit: 25,
  };
  const err = $('audit-error');
  try {
    const data = await call('audit_log_read', params);
    setError(err, '');
    markFields(form, '');
    const rows = (data.records || []).map((r) => h('tr', { dataset: { seq: r.seq } },
      h('td', { 'data-label': 'Time (UTC)' }, utc(r.time)),
      h('td', { 'data-label': 'Event' }, h('code', {}, r.event)),
      h('td', { 'data-label': 'Ticket' }, r.ticket_id ?? '—'),
      h('td', { 'data-label': 'User' }, r.ssh_username ?? '—'),
      h('td', { 'data-label': 'Actor' }, h('span', { class: 'small' }, r.actor)),
      h('td', { 'data-label': 'Outcome' }, h('span', { class: `badge ${r.outcome === 'ok' ? 'ok' : 'bad'}` }, r.outcome))));
    $('audit-table').tBodies[0].replaceChildren(...rows);
    const shown = rows.length;
    $('audit-count').textContent = data.matched > shown
      ? `Newest ${shown} of ${data.matched} matching records.`
      : `${shown} matching record(s).`;
  } catch (e) {
    setError(err, e.reason);
    markFields(form, e.reason);
  }
}

export async function verifyAudit(button) {
  await busy(button, 'Verifying…', async () => {
    const out = $('audit-verify-result');
    try {
      const data = await call('audit_log_verify');
      out.textContent = data.summary;
      out.className = `verify ${data.ok ? 'ok' : 'bad'}`;
    } catch (e) {
      out.textContent = e.reason;
      out.className = 'verify bad';
    }
    out.hidden = false;
  });
}
