#!/bin/sh
# WHM (cpsrvd) signs the administrator in, checks the AppConfig's acls and
# runs this as root with the request in the CGI environment and on stdin.
# supportauth forwards the page and its API calls to the daemon's socket.
exec /usr/sbin/supportauth whm-cgi
