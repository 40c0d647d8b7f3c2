//! The command-line client over the control socket.
