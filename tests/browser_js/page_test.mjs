// Drives Debian's chromium through the web page for tests/browser.rs, one
// phase per run (the Rust side checks the host between phases):
//
//   node page_test.mjs PHASE
//
// Environment: BASE_URL (the daemon's TCP listener), SA_USER, SA_TOKEN,
// SUPPORT_KEY (a public key line), SCREENSHOTS (optional directory for
// docs/ screenshots). Every failed expectation throws: exit status 1.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const USER = process.env.SA_USER || 'root';
const TOKEN = process.env.SA_TOKEN;
const KEY = process.env.SUPPORT_KEY;
const SHOTS = process.env.SCREENSHOTS || '';
const LABELS = ['Success', 'Timeout', 'Escalate', 'Auth', 'Unreachable', 'Refused',
  'Protocol', 'Environment', 'Unknown', 'Ticket System Timeout'];
// Generous upper bounds for a shared 2-core machine; never a timing assertion.
const WAIT = 60000;

function log(...a) {
  console.log('[browser]', ...a);
}

const row = (page, ticket) => page.locator(`#ticket-table tbody tr[data-ticket="${ticket}"]`);
const detail = (page, ticket) => page.locator(`#ticket-table tbody tr.detail-row[data-for="${ticket}/1"]`);

async function confirm(page, how = 'click') {
  const dialog = page.locator('dialog#confirm');
  await dialog.waitFor({ state: 'visible' });
  if (how === 'keyboard') {
    // Cancel has the focus; Tab to OK, Enter.
    assert.equal(await page.evaluate(() => document.activeElement.id), 'confirm-cancel');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'confirm-ok');
    await page.keyboard.press('Enter');
  } else {
    await page.locator('#confirm-ok').click();
  }
  await dialog.waitFor({ state: 'hidden' });
}

async function signIn(page) {
  await page.goto(BASE);
  await page.locator('#signin-token').waitFor();
  await page.fill('#signin-user', USER);
  await page.fill('#signin-token', TOKEN);
  await page.click('#signin-submit');
  await page.locator('#app').waitFor();
  await page.locator('#portal-state[data-state]').waitFor();
}

async function testRow(page, ticket, how = 'click') {
  const button = row(page, ticket).getByRole('button', { name: 'Test' });
  if (how === 'keyboard') {
    await button.focus();
    await page.keyboard.press('Enter');
  } else {
    await button.click();
  }
  const badge = detail(page, ticket).locator('.badge[data-result]');
  await badge.waitFor({ timeout: 200000 });
  if (how === 'keyboard') {
    // The table was drawn again; the focus stayed on Test.
    assert.equal(await page.evaluate(() => document.activeElement.dataset.key), `${ticket}/1:test`);
  }
  const label = (await badge.textContent()).trim();
  assert.ok(LABELS.includes(label), `SSH test label ${label} is one of the seed's`);
  log(`ticket ${ticket}: SSH test ${label}:`, (await detail(page, ticket).textContent()).trim());
  return label;
}

/// On a 390 px phone nothing may stick out sideways; with SCREENSHOTS set,
/// the README's pictures (wide, and the top of the page on the phone).
async function narrowAndScreenshots(page, name) {
  if (SHOTS) {
    await page.screenshot({ path: `${SHOTS}/${name}-wide.png`, fullPage: true });
  }
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 390px screen`);
  // The table has become cards: no header row, every cell labelled.
  assert.equal(await page.locator('#ticket-table thead').isVisible(), false);
  if (SHOTS) {
    const bottom = await page.evaluate(() => {
      const r = document.getElementById('tickets').getBoundingClientRect();
      return Math.ceil(r.bottom + window.scrollY + 16);
    });
    await page.screenshot({
      path: `${SHOTS}/${name}-narrow.png`,
      fullPage: true,
      clip: { x: 0, y: 0, width: 390, height: bottom },
    });
    log(`screenshots ${name}-wide.png and ${name}-narrow.png`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

const phases = {
  // A wrong token is refused with the API's reason; the right one, typed
  // with the keyboard alone, signs in; signing out forgets it.
  async signin(page) {
    await page.goto(BASE);
    await page.locator('#signin-token').waitFor();
    assert.equal(await page.locator('#app').isVisible(), false);
    await page.fill('#signin-token', 'WRONGTOKEN0000000000000000000000');
    await page.click('#signin-submit');
    const err = page.locator('#signin-error');
    await err.waitFor();
    const reason = (await err.textContent()).trim();
    assert.ok(reason.length > 10, `a reason is shown: ${reason}`);
    assert.equal(await page.locator('#app').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    log('wrong token refused:', reason);

    await page.focus('#signin-user');
    await page.keyboard.press('Control+A');
    await page.keyboard.type(USER);
    await page.keyboard.press('Tab');
    await page.keyboard.type(TOKEN);
    await page.keyboard.press('Enter');
    await page.locator('#app').waitFor();
    assert.equal(await page.locator('#signin').isVisible(), false);
    assert.equal(await page.evaluate(() => document.cookie), '');
    const kept = await page.evaluate(() => sessionStorage.getItem('supportauth.signin'));
    assert.ok(kept && kept.includes(TOKEN), 'the token is kept in sessionStorage');
    await page.locator('#portal-state[data-state="NOT_CONNECTED"]').waitFor();
    await page.locator('#tickets-empty').waitFor();
    log('signed in with the keyboard; portal Not connected; no tickets');

    // With no grant there is nothing to whitelist: the API's reason shows
    // in the firewall box.
    await page.click('#whitelist-setup');
    const fwErr = page.locator('#firewall-error');
    await fwErr.waitFor();
    assert.match(await fwErr.textContent(), /No grant is active/);
    log('whitelist set up refused:', (await fwErr.textContent()).trim());

    await page.click('#sign-out');
    await page.locator('#signin').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  },

  // The local grant form: a bad key shows the API's reason next to the
  // form, a good one appears as granted with its time left.
  async grant(page) {
    await signIn(page);
    await page.fill('#grant-ticket', '4242');
    await page.fill('#grant-key', 'ssh-ed25519 not-a-key');
    await page.fill('#grant-ips', '127.0.0.1');
    await page.click('#grant-submit');
    const err = page.locator('#grant-error');
    await err.waitFor();
    log('bad key refused:', (await err.textContent()).trim());
    assert.equal(await row(page, 4242).count(), 0);

    // The key from a chosen file, as an administrator would pick it.
    await page.setInputFiles('#grant-key-file', {
      name: 'support.pub', mimeType: 'text/plain', buffer: Buffer.from(`${KEY}\n`),
    });
    await page.waitForFunction((k) => document.getElementById('grant-key').value === k, KEY);
    await page.fill('#grant-ttl', '2');
    await page.selectOption('#grant-ttl-unit', '3600');
    await page.click('#grant-submit');
    await row(page, 4242).locator('.badge', { hasText: 'Granted' }).waitFor({ timeout: WAIT });
    assert.equal(await err.isVisible(), false);
    const left = (await row(page, 4242).locator('td[data-label="Granted"]').textContent()).trim();
    assert.match(left, /Granted\s*1 h 5\d m left/, left);
    const notice = (await page.locator('#notice').textContent()).trim();
    assert.match(notice, /granted for ticket 4242 as root/, notice);
    await page.locator('#whitelist-table tr[data-backend="chain_status"] .badge', { hasText: 'ACTIVE' }).waitFor();
    log('granted:', left, '|', notice, '| nftables whitelist ACTIVE');
  },

  // Test shows a seed label; Revoke (confirmed with the keyboard) removes
  // the row.
  async test_revoke(page) {
    await signIn(page);
    await row(page, 4242).waitFor();
    // A local grant's SSH address is this host's port 22 (ticket_grant
    // records no other), where the sandbox has no sshd: any seed label
    // will do here; the portal grant below must succeed.
    await testRow(page, 4242, 'keyboard');
    await row(page, 4242).getByRole('button', { name: 'Revoke' }).click();
    await confirm(page, 'keyboard');
    await row(page, 4242).waitFor({ state: 'detached', timeout: WAIT });
    await page.locator('#tickets-empty').waitFor();
    log('revoked: the row is gone');
  },

  // The kill switch empties the table; the audit log shows it and
  // verifies.
  async killswitch(page) {
    await signIn(page);
    await row(page, 4301).waitFor();
    await row(page, 4302).waitFor();
    // Cancel changes nothing.
    await page.click('#revoke-all');
    await page.locator('dialog#confirm').waitFor();
    await page.click('#confirm-cancel');
    assert.equal(await row(page, 4301).count(), 1);
    await page.click('#revoke-all');
    await confirm(page);
    await page.locator('#tickets-empty').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#ticket-table tbody tr').count(), 0);
    log('kill switch: the table is empty');

    await page.locator('#audit-table tbody tr', { hasText: 'revoke_all' }).first().waitFor();
    await page.fill('#audit-ticket', '4301');
    await page.selectOption('#audit-event', 'grant');
    await page.click('#audit-form button[type="submit"]');
    // The filtered answer replaces the table (no fixed wait: until it has).
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#audit-table tbody tr')];
      return rows.length > 0 && rows.every((r) => r.dataset.seq && r.cells[2].textContent.trim() === '4301');
    });
    const tickets = await page.locator('#audit-table tbody td[data-label="Ticket"]').allTextContents();
    const events = await page.locator('#audit-table tbody td[data-label="Event"]').allTextContents();
    assert.ok(tickets.length >= 1 && tickets.every((t) => t.trim() === '4301'), `${tickets}`);
    assert.ok(events.every((e) => e.trim() === 'grant'), `${events}`);
    await page.fill('#audit-ticket', 'abc');
    await page.click('#audit-form button[type="submit"]');
    await page.locator('#audit-error').waitFor();
    assert.equal(await page.getAttribute('#audit-ticket', 'aria-invalid'), 'true');
    await page.click('#audit-verify');
    const verdict = page.locator('#audit-verify-result');
    await verdict.waitFor({ timeout: WAIT });
    const text = (await verdict.textContent()).trim();
    assert.match(text, /^OK: \d+ records/, text);
    log('audit: filtered records shown;', text);
  },

  // Root may not log in: the grant makes a temporary user whose password
  // is shown once, copied with the button, and kept nowhere.
  async temp_password(page) {
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(BASE).origin });
    await signIn(page);
    await page.fill('#grant-ticket', '4400');
    await page.fill('#grant-key', KEY);
    await page.fill('#grant-ips', '127.0.0.1');
    await page.click('#grant-submit');
    await page.locator('#password-box').waitFor({ timeout: WAIT });
    const user = (await page.textContent('#password-user')).trim();
    const password = (await page.textContent('#password-value')).trim();
    assert.equal(user, 'cp4400.ssh');
    assert.equal(password.length, 64);
    await row(page, 4400).locator('.badge', { hasText: 'Granted' }).waitFor();
    await page.click('#password-copy');
    await page.locator('#password-copy', { hasText: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), password);
    const kept = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + document.cookie);
    assert.ok(!kept.includes(password), 'the password is not stored in the browser');
    await page.click('#password-done');
    await page.locator('#password-box').waitFor({ state: 'hidden' });
    assert.equal(await page.textContent('#password-value'), '');
    await page.reload();
    await row(page, 4400).waitFor();
    assert.ok(!(await page.content()).includes(password), 'a reload does not bring it back');
    log('temporary user', user, 'password shown once, copied, forgotten');
    // For the Rust side, which logs in with it.
    console.log(`PASSWORD ${password}`);
  },

  // Inside WHM: whm-cgi behind a CGI host; WHM signed the administrator
  // in, so there is no sign-in and no token anywhere.
  async whm(page) {
    const resp = await page.goto(process.env.WHM_URL);
    assert.ok(page.url().endsWith('/index.cgi/'), `redirected to index.cgi/: ${page.url()}`);
    const csp = resp.headers()['content-security-policy'];
    assert.match(csp, /frame-ancestors 'self'/, csp);
    assert.match(csp, /default-src 'self'/, csp);
    await page.locator('#app').waitFor();
    assert.equal(await page.locator('#signin').isVisible(), false);
    assert.equal((await page.textContent('#who-name')).trim(), 'Signed in through WHM');
    assert.equal(await page.locator('#sign-out').isVisible(), false);
    const r = row(page, 4500);
    await r.locator('.badge', { hasText: 'Granted' }).waitFor();
    await r.getByRole('button', { name: 'Revoke' }).click();
    await confirm(page);
    await r.waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    log('inside WHM: listed and revoked through whm-cgi without a token');
  },

  // Connect through the portal's authorization window, then grant two
  // tickets from the table and test one through the portal.
  async portal_connect(page) {
    await signIn(page);
    await page.locator('#portal-state[data-state="NOT_CONNECTED"]').waitFor();
    const [popup] = await Promise.all([
      page.waitForEvent('popup'),
      page.click('#portal-login'),
    ]);
    await popup.locator('#allow').click();
    await page.locator('#portal-state[data-state="CONNECTED"]').waitFor({ timeout: WAIT });
    log('connected to the portal through its authorization window');
    for (const t of [5001, 5002, 5003]) {
      const r = row(page, t);
      await r.waitFor();
      assert.match(await r.textContent(), /Not granted/);
      await r.getByRole('button', { name: 'Grant' }).click();
      await r.locator('.badge', { hasText: 'Granted' }).waitFor({ timeout: WAIT });
    }
    assert.equal(await page.locator('#remove-closed').isVisible(), false);
    log('granted 5001, 5002, 5003 from the table');
  },

  // Closed tickets: Revoke and Remove on one row, then the button for all.
  async portal_closed(page) {
    await signIn(page);
    await page.locator('#portal-state[data-state="CONNECTED"]').waitFor();
    await page.click('#tickets-reload');
    const closed = row(page, 5002);
    await closed.locator('.badge', { hasText: 'Closed' }).waitFor();
    await page.locator('#remove-closed').waitFor();
    assert.equal(await closed.getByRole('button', { name: 'Test' }).count(), 0);
    assert.equal(await testRow(page, 5001), 'Success');
    await narrowAndScreenshots(page, 'page');
    await closed.getByRole('button', { name: 'Revoke and Remove' }).click();
    await confirm(page);
    await closed.waitFor({ state: 'detached', timeout: WAIT });
    log('Revoke and Remove: 5002 is gone');
    await row(page, 5003).waitFor();
    await page.click('#remove-closed');
    await confirm(page);
    await row(page, 5003).waitFor({ state: 'detached', timeout: WAIT });
    await page.locator('#remove-closed').waitFor({ state: 'hidden' });
    await row(page, 5001).locator('.badge', { hasText: 'Granted' }).waitFor();
    log('Revoke and Remove Closed Tickets: 5003 is gone, 5001 stays');
  },

  // The portal stops answering: the box says so and the grant made here
  // is still listed, its ticket's status unknown.
  async portal_unreachable(page) {
    await signIn(page);
    await page.locator('#portal-state[data-state="UNREACHABLE"]').waitFor();
    assert.match(await page.textContent('#portal-state'), /Unreachable/);
    const r = row(page, 5001);
    await r.locator('.badge', { hasText: 'Granted' }).waitFor();
    assert.equal((await r.locator('td[data-label="Ticket status"]').textContent()).trim(), 'Unknown');
    log('portal unreachable: shown; 5001 still listed as granted');
  },
};

async function main() {
  const phase = process.argv[2];
  assert.ok(phases[phase], `unknown phase ${phase}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(WAIT);
    // No request may leave the machine: everything the page loads is
    // the daemon's (or, for the authorization window, the portal stub's).
    const origins = new Set();
    context.on('request', (r) => origins.add(new URL(r.url()).origin));
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console error: ${m.text()}`);
    });
    await phases[phase](page);
    const base = new URL(BASE).origin;
    const allowed = [base, process.env.PORTAL_ORIGIN || ''];
    if (process.env.WHM_URL) allowed.push(new URL(process.env.WHM_URL).origin);
    for (const o of origins) {
      assert.ok(allowed.includes(o), `request to ${o} left the daemon's origin`);
    }
    // A refused sign-in logs the 401 in the console; nothing else may.
    const unexpected = errors.filter((e) => !e.includes('401'));
    assert.deepEqual(unexpected, [], 'no script errors or CSP violations');
    log(`phase ${phase}: ok`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error('[browser] FAILED:', e && e.stack ? e.stack : e);
  process.exit(1);
});
