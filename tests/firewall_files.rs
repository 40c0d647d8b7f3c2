//! CSF, cPHulk and hosts.allow backends against realistic files in a scratch
//! root. CSF and cPanel cannot be installed here, so `csf` and `whmapi1` are
//! STAND-INS: small scripts that implement the real tools' file behaviour
//! that supportauth relies on (`csf -a IP comment` appends `IP # comment -
//! date` to csf.allow unless the IP is already there, `csf -ar IP` removes
//! the IP's lines; whmapi1's cPHulk white list keeps IP+comment records and
//! answers in WHM API 1 JSON). They are the external tools, not the code
//! under test. The chain tools point at paths that do not exist, so nothing
//! here can touch the host's firewall.
// Tests build scratch roots with plain std::fs (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use supportauth::config::Config;
use supportauth::firewall::{ChangeAction, Problem, Whitelist, WlStatus};
use supportauth::types::SupportIp;

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let s = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(s.path("bin")).unwrap();
        s
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }
    fn tool(&self, name: &str, script: &str) -> PathBuf {
        let p = self.write(&format!("bin/{name}"), script.as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
    fn config(&self, backends: &[&str]) -> Config {
        let mut cfg = Config {
            root: self.dir.path().to_path_buf(),
            ..Config::default()
        };
        cfg.firewall.backends = backends.iter().map(|s| s.to_string()).collect();
        cfg.tools.nft = self.path("no-such-tool/nft");
        cfg.tools.iptables = self.path("no-such-tool/iptables");
        cfg.tools.ip6tables = self.path("no-such-tool/ip6tables");
        cfg.tools.csf = self.path("bin/csf");
        cfg.tools.whmapi1 = self.path("bin/whmapi1");
        cfg
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.path("calls.log")).unwrap_or_default()
    }
}

fn ips(v: &[&str]) -> Vec<SupportIp> {
    v.iter().map(|s| SupportIp::parse(s).unwrap()).collect()
}

/// STAND-IN for ConfigServer's `csf` (see module comment).
fn fake_csf(s: &Scratch) {
    let allow = s.path("etc/csf/csf.allow");
    let log = s.path("calls.log");
    s.tool(
        "csf",
        &format!(
            r#"#!/bin/sh
ALLOW='{allow}'
echo "csf $*" >> '{log}'
case "$1" in
  -a)
    ip="$2"; shift 2
    if awk -v ip="$ip" '{{l=$0; sub(/#.*/,"",l); split(l,a," "); if (a[1]==ip) f=1}} END{{exit !f}}' "$ALLOW"; then
      echo "csf: $ip is already in $ALLOW"; exit 0
    fi
    printf '%s # %s - %s\n' "$ip" "$*" "$(date)" >> "$ALLOW"
    echo "Adding $ip to csf.allow and iptables ACCEPT..." ;;
  -ar)
    awk -v ip="$2" '{{l=$0; sub(/#.*/,"",l); split(l,a," "); if (a[1]!=ip) print $0}}' "$ALLOW" > "$ALLOW.new"
    cat "$ALLOW.new" > "$ALLOW"; rm -f "$ALLOW.new"
    echo "Removing rule..." ;;
  *) echo "csf stand-in: unsupported $1" >&2; exit 1 ;;
esac
"#,
            allow = allow.display(),
            log = log.display()
        ),
    );
}

/// STAND-IN for cPanel's `whmapi1` cPHulk functions (see module comment).
fn fake_whmapi1(s: &Scratch, db: &Path) {
    let log = s.path("calls.log");
    s.tool(
        "whmapi1",
        &format!(
            r#"#!/bin/sh
DB='{db}'
echo "whmapi1 $*" >> '{log}'
[ "$1" = "--output=json" ] || {{ echo "stand-in expects --output=json" >&2; exit 1; }}
fn="$2"; shift 2
list=""; ip=""; comment=""
for a in "$@"; do
  case "$a" in
    list_name=*) list="${{a#list_name=}}" ;;
    ip=*) ip="${{a#ip=}}" ;;
    comment=*) comment="${{a#comment=}}" ;;
  esac
done
if [ "$list" != white ]; then
  printf '{{"metadata":{{"result":0,"reason":"Invalid list_name"}},"data":null}}'; exit 0
fi
case "$fn" in
  read_cphulk_records)
    printf '{{"metadata":{{"command":"read_cphulk_records","result":1,"reason":"OK","version":1}},"data":{{"list_name":"white","requester_ip":"127.0.0.1","ips_in_list":{{'
    awk -F '\t' '{{printf "%s\"%s\":\"%s\"", s, $1, $2; s=","}}' "$DB"
    printf '}}}}}}' ;;
  create_cphulk_record)
    if awk -F '\t' -v ip="$ip" '$1==ip{{f=1}} END{{exit !f}}' "$DB"; then
      printf '{{"metadata":{{"result":1,"reason":"OK"}},"data":{{"ips_added":[],"ips_failed":{{"%s":"already in the list"}}}}}}' "$ip"; exit 0
    fi
    printf '%s\t%s\n' "$ip" "$comment" >> "$DB"
    printf '{{"metadata":{{"result":1,"reason":"OK"}},"data":{{"ips_added":["%s"],"ips_failed":{{}},"comment":"%s"}}}}' "$ip" "$comment" ;;
  delete_cphulk_record)
    awk -F '\t' -v ip="$ip" '$1!=ip' "$DB" > "$DB.new"; cat "$DB.new" > "$DB"; rm -f "$DB.new"
    printf '{{"metadata":{{"result":1,"reason":"OK"}},"data":{{"ips_removed":["%s"],"ips_failed":{{}}}}}}' "$ip" ;;
  *)
    printf '{{"metadata":{{"result":0,"reason":"Unknown app requested"}},"data":null}}' ;;
esac
"#,
            db = db.display(),
            log = log.display()
        ),
    );
}

const CSF_ALLOW: &str = "\
###############################################################################
# Copyright (C) 2006-2025 Jonathan Michaelson
#
# https://github.com/waytotheweb/scripts/blob/main/LICENSE.txt
###############################################################################
# The following IP addresses will be allowed through iptables.
# One IP address per line.
# CIDR addressing allowed with a quaded IP (e.g. 192.168.254.0/24).
# Only list IP addresses, not domain names (they will be ignored)
#
Include /etc/csf/cpanel.allow
tcp|in|d=22|s=203.0.113.50
192.0.2.10 # office - Tue Mar  5 10:00:00 2024
";

#[test]
fn csf_stand_in_adds_and_removes_only_ours() {
    let s = Scratch::new();
    fake_csf(&s);
    let allow = s.write("etc/csf/csf.allow", CSF_ALLOW.as_bytes());
    let wl = Whitelist::detect(&s.config(&["auto"]));
    assert_eq!(wl.backends(), vec!["csf"]);

    let want = ips(&["192.0.2.10", "192.0.2.20", "2001:db8::5"]);
    let r = wl.ensure(&want);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.to_json(), serde_json::json!({"csf_wl_status": "ACTIVE"}));
    let text = std::fs::read_to_string(&allow).unwrap();
    assert!(
        text.starts_with(CSF_ALLOW),
        "the admin's lines stay first and intact"
    );
    assert!(text.contains("\n192.0.2.20 # cPanel-support-access - "));
    assert!(text.contains("\n2001:db8::5 # cPanel-support-access - "));
    // The admin's identical entry is reported, never re-added.
    assert!(r
        .changes
        .iter()
        .any(|c| c.action == ChangeAction::Preexisting && c.address == "192.0.2.10"));
    assert!(!s.log().contains("csf -a 192.0.2.10"), "{}", s.log());
    assert_eq!(wl.check(&want).problem, Problem::No);

    // Idempotent.
    let again = wl.ensure(&want);
    assert!(again
        .changes
        .iter()
        .all(|c| c.action == ChangeAction::Preexisting));

    // Last grant ends: only ours removed, the admin's 192.0.2.10 survives.
    let r = wl.clear();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["csf_wl_status"], WlStatus::Inactive);
    assert_eq!(std::fs::read_to_string(&allow).unwrap(), CSF_ALLOW);
    assert!(!s.log().contains("csf -ar 192.0.2.10"), "{}", s.log());
    assert_eq!(wl.check(&[]).problem, Problem::No);
}

#[test]
fn csf_disabled_is_not_detected() {
    let s = Scratch::new();
    s.write("etc/csf/csf.allow", CSF_ALLOW.as_bytes());
    s.write("etc/csf/csf.disable", b"");
    assert!(Whitelist::detect(&s.config(&["auto"]))
        .backends()
        .is_empty());
}

#[test]
fn cphulk_stand_in_keeps_preexisting_records() {
    let s = Scratch::new();
    let db = s.write("var/cphulk-white.db", b"192.0.2.10\tAdmin office\n");
    fake_whmapi1(&s, &db);
    s.write("usr/local/cpanel/bin/cphulk_pam_ctl", b"#!/bin/sh\n");
    let wl = Whitelist::detect(&s.config(&["auto"]));
    assert_eq!(wl.backends(), vec!["cphulk"]);

    let want = ips(&["192.0.2.10", "192.0.2.20", "2001:db8::5"]);
    let r = wl.ensure(&want);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["hulk_wl_status"], WlStatus::Active);
    let records = std::fs::read_to_string(&db).unwrap();
    assert_eq!(
        records,
        "192.0.2.10\tAdmin office\n192.0.2.20\tcPanel-support-access\n2001:db8::5\tcPanel-support-access\n"
    );
    assert!(!s
        .log()
        .contains("create_cphulk_record list_name=white ip=192.0.2.10"));
    assert_eq!(wl.check(&want).problem, Problem::No);

    let r = wl.clear();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["hulk_wl_status"], WlStatus::Inactive);
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "192.0.2.10\tAdmin office\n"
    );
    assert!(!s.log().contains("ip=192.0.2.10"), "{}", s.log());
}

const HOSTS_ALLOW: &[u8] =
    b"# /etc/hosts.allow: list of hosts that are allowed to access the system.\n\
#                   See the manual pages hosts_access(5) and hosts_options(5).\n\
#\n\
sshd : 192.0.2.10 : ALLOW\r\n\
ALL : [2001:db8:99::]/64\n\
# caf\xe9 wifi (latin-1 byte kept as is)\n\
vsftpd : 198.51.100.7";

#[test]
fn hosts_allow_rule_on_top_and_admin_bytes_preserved() {
    let s = Scratch::new();
    let p = s.write("etc/hosts.allow", HOSTS_ALLOW);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let wl = Whitelist::detect(&s.config(&["auto"]));
    assert_eq!(wl.backends(), vec!["hosts_allow"]);

    let want = ips(&["192.0.2.10", "198.51.100.0/24", "2001:db8::5"]);
    let r = wl.ensure(&want);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.statuses["host_access_wl_status"], WlStatus::Active);
    let text = std::fs::read(&p).unwrap();
    let head = b"# supportauth: cPanel-support-access (managed by supportauth; do not edit the next line)\n\
sshd : 192.0.2.10, 198.51.100.0/255.255.255.0, [2001:db8::5] : ALLOW\n";
    assert!(text.starts_with(head), "{}", String::from_utf8_lossy(&text));
    assert_eq!(&text[head.len()..], HOSTS_ALLOW);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert!(r
        .changes
        .iter()
        .any(|c| c.action == ChangeAction::Preexisting && c.address == "192.0.2.10"));
    assert_eq!(wl.check(&want).problem, Problem::No);
    assert!(wl.ensure(&want).changes.is_empty(), "idempotent");

    // Clear: the admin's file back byte for byte, their 192.0.2.10 kept.
    let r = wl.clear();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(std::fs::read(&p).unwrap(), HOSTS_ALLOW);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(r.changes.len(), 3);
    assert!(r.changes.iter().all(|c| c.action == ChangeAction::Removed));
}

#[test]
fn hosts_deny_alone_gets_a_hosts_allow() {
    let s = Scratch::new();
    s.write("etc/hosts.deny", b"sshd : ALL\n");
    let wl = Whitelist::detect(&s.config(&["auto"]));
    assert_eq!(wl.backends(), vec!["hosts_allow"]);
    let r = wl.ensure(&ips(&["192.0.2.20"]));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let text = std::fs::read_to_string(s.path("etc/hosts.allow")).unwrap();
    assert!(text.ends_with("sshd : 192.0.2.20 : ALLOW\n"), "{text}");
    wl.clear();
    assert_eq!(
        std::fs::read_to_string(s.path("etc/hosts.allow")).unwrap(),
        ""
    );
}

#[test]
fn all_file_backends_together_and_one_failure_does_not_stop_the_others() {
    let s = Scratch::new();
    fake_csf(&s);
    s.write("etc/csf/csf.allow", CSF_ALLOW.as_bytes());
    s.write("usr/local/cpanel/bin/cphulk_pam_ctl", b"");
    s.write("etc/hosts.allow", HOSTS_ALLOW);
    // A whmapi1 that reports cPHulk disabled (WHM API 1 failure, exit 0).
    s.tool(
        "whmapi1",
        "#!/bin/sh\nprintf '{\"metadata\":{\"result\":0,\"reason\":\"cPHulk is disabled on the server.\"},\"data\":null}'\n",
    );
    let wl = Whitelist::detect(&s.config(&["auto"]));
    assert_eq!(wl.backends(), vec!["csf", "cphulk", "hosts_allow"]);
    let r = wl.ensure(&ips(&["192.0.2.20"]));
    assert_eq!(
        r.to_json(),
        serde_json::json!({
            "csf_wl_status": "ACTIVE",
            "hulk_wl_status": "ERR_SETUP",
            "host_access_wl_status": "ACTIVE"
        })
    );
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].contains("cPHulk is disabled"), "{:?}", r.errors);
    let c = wl.check(&ips(&["192.0.2.20"]));
    assert_eq!(c.statuses["hulk_wl_status"], WlStatus::ErrUnknown);
    assert_eq!(c.problem, Problem::NeedSetup);
    let r = wl.clear();
    assert_eq!(r.statuses["hulk_wl_status"], WlStatus::ErrUnsetup);
    assert_eq!(r.statuses["csf_wl_status"], WlStatus::Inactive);
    assert_eq!(
        std::fs::read(s.path("etc/hosts.allow")).unwrap(),
        HOSTS_ALLOW
    );
}
