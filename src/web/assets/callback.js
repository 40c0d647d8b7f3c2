// The portal's authorization window lands here (redirect_uri) with
// `?code=...`: hand the code to the page that opened the window, on a
// same-origin BroadcastChannel, and close. The code never leaves this
// origin from here; the page exchanges it with ticket_validate_oauth2_code.

const params = new URLSearchParams(location.search);
const code = params.get('code');
const error = params.get('error');
const channel = new BroadcastChannel('supportauth-oauth2');
channel.postMessage(code ? { code } : { error: error || 'no code in the answer' });
document.getElementById('callback-text').textContent = code
  ? 'Done: this window can be closed.'
  : `The portal did not authorize this server: ${error || 'no code'}.`;
// Drop the code from the address bar and history.
history.replaceState(null, '', location.pathname);
if (code) setTimeout(() => window.close(), 300);
