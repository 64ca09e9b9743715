//! The log line: Unix seconds, a colon, the message, on stderr, as `mosquitto -v` writes.
//!
//! Owns: nothing but the format. Invariant: one call writes one whole line. Must not
//! touch: broker or shard state; anything may call it.
#![forbid(unsafe_code)]

/// Write one line to stderr prefixed with Unix seconds, as `mosquitto -v` does.
pub fn log(args: std::fmt::Arguments<'_>) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!("{secs}: {args}");
}
