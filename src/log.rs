//! The log line: Unix seconds, a colon, the message, on stderr, as `mosquitto -v` writes.
//!
//! Owns: the logging entry points the engine calls. Invariant: one call writes one whole
//! line, at the level the caller names; [`log_at!`](crate::log_at) checks the level
//! before its arguments are evaluated or formatted, so a disabled level costs one relaxed
//! atomic load and nothing else (no allocation, no formatting) on the publish path. Must
//! not touch: broker or shard state; anything may call it.
#![forbid(unsafe_code)]

pub use crate::log_sink::Level;

/// Write one line at `level` if that level is enabled; the arguments are not evaluated
/// otherwise: `log_at!(Level::Debug, "Sending PUBLISH to {id}")`.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log_sink::enabled($level) {
            $crate::log_sink::emit($level, format_args!($($arg)+));
        }
    };
}

/// Write one line whose level is read from how it starts (`Error:`, `Warning:`, else a
/// notice): for the start-up and shutdown messages of `main`. The engine uses `log_at!`.
pub fn log(args: std::fmt::Arguments<'_>) {
    crate::log_sink::emit_line(args);
}

/// Write one `information` line: the level Mosquitto gives start-up, the configuration
/// file read, listen sockets opened and closed, and reloads (`log_type information`).
pub fn info(args: std::fmt::Arguments<'_>) {
    crate::log_sink::emit(Level::Information, args);
}
