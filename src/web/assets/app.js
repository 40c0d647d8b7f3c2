// The page's entry point: sign-in, then every box, and the buttons' wiring.

import { call, inWhm, signin, saveSignin, clearSignin, whenUnauthorized } from './api.js';
import { $, setError, busy, notice } from './dom.js';
import { loadTickets, removeClosed, onTickets, tick } from './tickets.js';
import {
  showPortal, loadPortalStatus, portalLogin, listenForCode, loadWhitelist, whitelist,
  forgetPassword, copyPassword, readKeyFile, submitGrant, revokeAll, loadAudit, verifyAudit,
} from './panels.js';

async function loadAll() {
  await Promise.all([loadTickets(), loadPortalStatus(), loadWhitelist(), loadAudit($('audit-form'))]);
}

function enter(user) {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = inWhm ? 'Signed in through WHM' : `Signed in as ${user}`;
  $('sign-out').hidden = inWhm;
  document.body.dataset.signedIn = 'true';
  return loadAll();
}

function leave(reason) {
  clearSignin();
  forgetPassword();
  notice('');
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  delete document.body.dataset.signedIn;
  setError($('signin-error'), reason || '');
  $('signin-token').value = '';
  $('signin-token').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const user = $('signin-user').value.trim() || 'root';
  const token = $('signin-token').value.trim();
  const err = $('signin-error');
  if (!token) {
    setError(err, 'Enter an API token.');
    $('signin-token').setAttribute('aria-invalid', 'true');
    return;
  }
  await busy($('signin-submit'), 'Signing in…', async () => {
    try {
      // A cheap read that every token with tickets-list may make.
      await call('ticket_portal_status', {}, { user, token });
    } catch (e) {
      setError(err, e.reason);
      $('signin-token').setAttribute('aria-invalid', 'true');
      return;
    }
    $('signin-token').removeAttribute('aria-invalid');
    setError(err, '');
    saveSignin(user, token);
    $('signin-token').value = '';
    await enter(user);
  });
}

function wire() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => leave(''));
  whenUnauthorized((reason) => leave(reason || 'The token was refused; sign in again.'));
  $('portal-login').addEventListener('click', portalLogin);
  listenForCode(async () => {
    await Promise.all([loadTickets(), loadPortalStatus()]);
  });
  $('whitelist-setup').addEventListener('click', (ev) => whitelist(ev.currentTarget, 'ticket_whitelist_setup'));
  $('whitelist-unsetup').addEventListener('click', (ev) => whitelist(ev.currentTarget, 'ticket_whitelist_unsetup'));
  $('tickets-reload').addEventListener('click', (ev) => busy(ev.currentTarget, 'Reloading…', loadTickets));
  $('remove-closed').addEventListener('click', (ev) => removeClosed(ev.currentTarget));
  $('grant-key-file').addEventListener('change', (ev) => readKeyFile(ev.currentTarget));
  $('grant-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitGrant(ev.currentTarget, async () => {
      await Promise.all([loadTickets(), loadWhitelist(), loadAudit($('audit-form'))]);
    });
  });
  $('password-copy').addEventListener('click', (ev) => copyPassword(ev.currentTarget));
  $('password-done').addEventListener('click', forgetPassword);
  $('revoke-all').addEventListener('click', (ev) => revokeAll(ev.currentTarget, loadAll));
  $('audit-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadAudit(ev.currentTarget);
  });
  $('audit-verify').addEventListener('click', (ev) => verifyAudit(ev.currentTarget));
  onTickets(showPortal);
  tick();
}

wire();
const saved = signin();
if (inWhm) enter('');
else if (saved) enter(saved.user);
else leave('');
