# supportauth %preun ($1: 0 = erase, 1+ = upgrade). On erase, take every
# grant away first (keys, temporary users, sudoers files, firewall
# entries) through the daemon, so each step is audited; a failure stops
# the erase (SUPPORTAUTH_REMOVE_KEEP_GRANTS=1 overrides). Then as
# %systemd_preun: disable and stop.
if [ "$1" -eq 0 ]; then
    echo "supportauth: revoking every support grant before removal..."
    /usr/sbin/supportauth prepare-removal || exit 1
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now supportauth.service >/dev/null 2>&1 || :
    fi
fi
