//! The log line: Unix seconds, a colon, the message, on stderr, as `mosquitto -v` writes.
//!
//! Owns: nothing but the format. Invariant: one call writes one whole line. Must not
//! touch: broker or shard state; anything may call it.
#![forbid(unsafe_code)]

/// Write one line to stderr prefixed with Unix seconds, as `mosquitto -v` does.
///
/// The line goes to the configured destination (`log_sink`: stderr by default).
pub fn log(args: std::fmt::Arguments<'_>) {
    crate::log_sink::emit_line(args);
}
