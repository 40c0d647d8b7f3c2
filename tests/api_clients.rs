//! Real third-party clients against the daemon: the seed's Perl
//! (HTTP::Tiny + JSON) style, curl (what the PHP example does), and curl
//! over TLS with a certificate it verifies.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::Daemon;

fn have(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn perl_http_tiny_client_as_in_the_seed() {
    if !have("perl", &["-MHTTP::Tiny", "-MJSON::PP", "-e", "1"]) {
        supportauth::test_skip!("SKIPPED: perl with HTTP::Tiny and JSON::PP is not installed");
        return;
    }
    let d = Daemon::start();
    let token = d.create_token("token_name=perl&acl-0=tokens-admin");
    let script = r#"
use strict; use warnings; use JSON::PP (); use HTTP::Tiny ();
my ($port, $user, $token) = @ARGV;
my $ua = HTTP::Tiny->new('verify_SSL' => 0,
    'default_headers' => { 'Authorization' => "whm $user:$token" });
my $response = $ua->get("http://127.0.0.1:$port/json-api/api_token_list?api.version=1");
if ($response->{'success'}) {
    my $json = JSON::PP::decode_json($response->{'content'});
    print "[+] tokens:\n";
    print "\t$_\n" for sort keys %{ $json->{'data'}->{'tokens'} };
} else {
    print "[!] Error: $response->{'status'} $response->{'reason'} returned\n";
    exit 1;
}
"#;
    let run = |t: &str| {
        Command::new("perl")
            .args(["-e", script, &d.port.to_string(), "root", t])
            .output()
            .unwrap()
    };
    let out = run(&token);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[+] tokens:\n\tperl\n"), "{text}");
    let out = run("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    assert!(String::from_utf8_lossy(&out.stdout).contains("401 Unauthorized"));
}

#[test]
fn curl_get_and_post() {
    if !have("curl", &["--version"]) {
        supportauth::test_skip!("SKIPPED: curl is not installed");
        return;
    }
    let d = Daemon::start();
    let token = d.create_token("token_name=curl");
    let base = format!("http://127.0.0.1:{}/json-api", d.port);
    let auth = format!("Authorization: whm root:{token}");
    let out = Command::new("curl")
        .args(["-sS", "-H", &auth])
        .arg(format!("{base}/api_token_list?api.version=1"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    // POST form body (curl -d), numbered repeats.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-H",
            &auth,
            "-d",
            "token_name=made-by-curl",
            "-d",
            "acl-0=tickets-list",
        ])
        .arg(format!("{base}/api_token_create?api.version=1"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    assert_eq!(v["data"]["acls"], serde_json::json!(["tickets-list"]));
}

#[test]
fn tls_listener_serves_verified_https() {
    if !have("openssl", &["version"]) || !have("curl", &["--version"]) {
        supportauth::test_skip!("SKIPPED: openssl or curl is not installed");
        return;
    }
    // Certificate and key under the scratch root, where the config's
    // /etc/supportauth paths resolve.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::start_with_setup(
        "tls_cert = \"/etc/supportauth/cert.pem\"\ntls_key = \"/etc/supportauth/key.pem\"",
        "",
        |root| {
            let etc = root.join("etc/supportauth");
            std::fs::create_dir_all(&etc).unwrap();
            for f in ["cert.pem", "key.pem"] {
                std::fs::copy(dir.path().join(f), etc.join(f)).unwrap();
            }
        },
    );
    let token = d.create_token("token_name=tls");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.path().join("cert.pem"))
        .args(["-H", &format!("Authorization: whm root:{token}")])
        .arg(format!(
            "https://127.0.0.1:{}/json-api/api_token_list?api.version=1",
            d.port
        ))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["metadata"]["result"], 1, "{v}");
    assert!(d.stderr().contains("https://127.0.0.1"));
    // Plain HTTP on the TLS port gets no answer it could mistake for one.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{}/json-api/api_token_list?api.version=1",
            d.port
        ))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
}

/// The README's Perl example, exactly as printed there: it lists the
/// granted ticket with a good token and fails (non-zero, the HTTP status
/// on stderr) with a bad one or none.
#[test]
fn readme_perl_example_runs_as_written() {
    if !have("perl", &["-MHTTP::Tiny", "-MJSON::PP", "-e", "1"]) {
        supportauth::test_skip!("SKIPPED: perl with HTTP::Tiny and JSON::PP is not installed");
        return;
    }
    if let Some(why) = common::cannot_run_host_tools() {
        supportauth::test_skip!("SKIPPED readme_perl_example_runs_as_written: {why}");
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("```perl\n")
        .expect("a Perl block in the README")
        + 8;
    let script = &readme[start..start + readme[start..].find("```").expect("block end")];
    let d = Daemon::start_configured("", "", |root| {
        common::scratch_root_config(root, "PermitRootLogin prohibit-password")
    });
    let key = common::support_key(d.dir.path());
    let granted = d.call(
        "ticket_grant",
        &[
            ("ticket_id", "4242"),
            ("server_num", "1"),
            ("ssh_key", key.as_str()),
        ],
    );
    assert_eq!(granted["metadata"]["result"], 1, "{granted}");
    let token = d.create_token("token_name=readme&acl-0=tickets-list");
    let url = format!("http://127.0.0.1:{}", d.port);
    let run = |token: Option<&str>| {
        let mut c = Command::new("perl");
        c.args(["-e", script])
            .env("SUPPORTAUTH_URL", &url)
            .env_remove("SUPPORTAUTH_TOKEN");
        if let Some(t) = token {
            c.env("SUPPORTAUTH_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(Some(&token));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "4242\n");
    let out = run(Some("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    let out = run(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SUPPORTAUTH_TOKEN"));
}
