# supportauth %post ($1: 1 = install, 2+ = upgrade). As %systemd_post: a
# new install is enabled or not by the host's presets, never started by
# the package (RPM convention); an upgrade is restarted by %postun.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload preset supportauth.service >/dev/null 2>&1 || :
        echo "supportauth: installed. Edit /etc/supportauth/config.toml (supportauth config validate), then: systemctl enable --now supportauth"
    fi
fi
