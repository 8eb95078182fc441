//! The daemon: supervisor, signals, `linepilot run`.
