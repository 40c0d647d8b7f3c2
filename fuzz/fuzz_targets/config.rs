//! The TOML configuration loader and its validation.
//! Properties: never panics (nor do the accessors the daemon calls on a
//! loaded config); a config that loads serialises back to TOML that loads
//! to the same config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use supportauth::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/supportauth/config.toml");
    let Ok(cfg) = Config::parse(text, path) else {
        return;
    };
    let _ = cfg.socket_mode();
    let _ = cfg.tls_configured();
    let _ = (cfg.state_dir(), cfg.database_path(), cfg.lock_path());
    let _ = (cfg.audit_log_path(), cfg.socket_path(), cfg.is_real_root());
    let again = toml::to_string(&cfg).expect("a loaded config serialises");
    let back = Config::parse(&again, path)
        .unwrap_or_else(|e| panic!("a serialised config does not load again ({e}):\n{again}"));
    assert_eq!(back, cfg, "{again}");
});
