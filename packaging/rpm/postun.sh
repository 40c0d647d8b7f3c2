# supportauth %postun ($1: 0 = erased, 1+ = upgraded). As
# %systemd_postun_with_restart: an upgraded daemon restarts (and migrates
# its store); an erase keeps state and the audit log, and says where.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl try-restart supportauth.service >/dev/null 2>&1 || :
    fi
else
    echo "supportauth: erased; kept the state (/var/lib/supportauth), logs (/var/log/supportauth) and the audit log (/var/cpanel/logs/supportauth). Delete them yourself when no longer needed."
fi
