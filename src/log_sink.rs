//! Where log lines go and what they look like: Mosquitto's `log_dest`, `log_type`,
//! `log_timestamp`, `log_timestamp_format`, plus `log_format json`.
//!
//! Owns: the process's log destinations (opened by `init`, replaced whole by `reload` on
//! SIGHUP) and the line format. Invariants: a line is formatted only when its level is
//! enabled — the check is one relaxed atomic load (`enabled`), so a disabled level costs
//! no allocation and no formatting on the publish path; a line is written whole, in one
//! `write` per destination; a destination that fails to write is skipped, never a panic.
//! Before `init` (tests, tools) lines go to stderr as `SECS: text`, as before.
//! Must not touch: what is logged (callers decide), sockets other than the syslog one.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

/// The syslog socket.
const SYSLOG_PATH: &str = "/dev/log";
/// syslog facility `daemon`.
const SYSLOG_FACILITY_DAEMON: u8 = 3;

/// A message's level, as Mosquitto's `log_type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `error`.
    Error = 0,
    /// `warning`.
    Warning = 1,
    /// `notice`.
    Notice = 2,
    /// `information`.
    Information = 3,
    /// `debug`.
    Debug = 4,
    /// `subscribe`.
    Subscribe = 5,
    /// `unsubscribe`.
    Unsubscribe = 6,
}

impl Level {
    /// Every level, in `log_type` order.
    pub const ALL: [Level; 7] = [
        Level::Error,
        Level::Warning,
        Level::Notice,
        Level::Information,
        Level::Debug,
        Level::Subscribe,
        Level::Unsubscribe,
    ];

    /// The `log_type` name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Information => "information",
            Level::Debug => "debug",
            Level::Subscribe => "subscribe",
            Level::Unsubscribe => "unsubscribe",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// syslog severity.
    fn severity(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warning => 4,
            Level::Notice => 5,
            Level::Information => 6,
            _ => 7,
        }
    }

    /// The level of a line written without one: `Error: …` and `Warning: …` say theirs,
    /// packet traces (`Received …`, `Sending …`) are debug, the rest notices.
    pub fn of_line(text: &str) -> Level {
        if text.starts_with("Error:") {
            Level::Error
        } else if text.starts_with("Warning:") {
            Level::Warning
        } else if text.starts_with("Received ") || text.starts_with("Sending ") {
            Level::Debug
        } else {
            Level::Notice
        }
    }
}

/// A set of levels (`log_type` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelSet(u8);

impl LevelSet {
    /// Mosquitto's default: error, warning, notice, information.
    pub const DEFAULT: LevelSet = LevelSet(0b1111);
    /// `log_type all`.
    pub const ALL: LevelSet = LevelSet(0x7f);
    /// `log_type none`.
    pub const NONE: LevelSet = LevelSet(0);

    /// Parse one `log_type` value into the set.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        match name {
            "all" => *self = LevelSet::ALL,
            "none" => *self = LevelSet::NONE,
            _ => {
                let l = Level::ALL
                    .iter()
                    .find(|l| l.name() == name)
                    .ok_or_else(|| format!("log_type: unknown type '{name}'"))?;
                self.0 |= l.bit();
            }
        }
        Ok(())
    }

    /// Whether `l` is in the set.
    pub fn has(self, l: Level) -> bool {
        self.0 & l.bit() != 0
    }
}

/// One `log_dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
    /// `file PATH` (appended to).
    File(PathBuf),
    /// `syslog` (facility daemon, through /dev/log).
    Syslog,
}

impl Dest {
    /// Parse a `log_dest` value (`none` is `Ok(None)`).
    pub fn parse(value: &str) -> Result<Option<Dest>, String> {
        let (kind, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        let rest = rest.trim();
        match (kind, rest.is_empty()) {
            ("stdout", true) => Ok(Some(Dest::Stdout)),
            ("stderr", true) => Ok(Some(Dest::Stderr)),
            ("syslog", true) => Ok(Some(Dest::Syslog)),
            ("none", true) => Ok(None),
            ("file", false) => Ok(Some(Dest::File(rest.into()))),
            ("file", true) => Err("log_dest file: needs a path".into()),
            ("topic", _) => Err("log_dest topic: not supported".into()),
            _ => Err(format!("log_dest: unknown destination '{value}'")),
        }
    }
}

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `SECS: text`, or `FORMATTED-TIME: text`, as Mosquitto writes.
    #[default]
    Text,
    /// One JSON object per line: `{"time":…,"level":…,"msg":…}`.
    Json,
}

/// Log settings, validated (see `config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Destinations; empty means nowhere.
    pub dests: Vec<Dest>,
    /// Levels written.
    pub levels: LevelSet,
    /// Prefix lines with a timestamp.
    pub timestamp: bool,
    /// strftime format of the timestamp (local time); Unix seconds when `None`.
    pub timestamp_format: Option<String>,
    /// Line format.
    pub format: Format,
    /// `connection_messages` (kept for the connection log lines; see docs/operations.md).
    pub connection_messages: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dests: vec![Dest::Stderr],
            levels: LevelSet::DEFAULT,
            timestamp: true,
            timestamp_format: None,
            format: Format::Text,
            connection_messages: true,
        }
    }
}

/// Whether `fmt` is a valid strftime format (checked when the configuration is read, since
/// formatting with an invalid one fails at every line).
pub fn valid_timestamp_format(fmt: &str) -> bool {
    !chrono::format::StrftimeItems::new(fmt).any(|i| matches!(i, chrono::format::Item::Error))
}

enum Out {
    Stdout,
    Stderr,
    File(Mutex<std::fs::File>),
    Syslog(UnixDatagram),
}

struct Sink {
    settings: Settings,
    outs: Vec<Out>,
}

static SINK: ArcSwapOption<Sink> = ArcSwapOption::const_empty();
/// The enabled levels (a `LevelSet`), read before anything is formatted. Every level is on
/// until `init`, so tools and tests see every line on stderr.
static LEVELS: AtomicU8 = AtomicU8::new(LevelSet::ALL.0);
/// `connection_messages`.
static CONNECTION_MESSAGES: AtomicBool = AtomicBool::new(true);

/// Open the destinations of `settings`.
fn open(settings: &Settings) -> Result<Sink, String> {
    let mut outs = Vec::new();
    for d in &settings.dests {
        outs.push(match d {
            Dest::Stdout => Out::Stdout,
            Dest::Stderr => Out::Stderr,
            Dest::File(p) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(|f| Out::File(Mutex::new(f)))
                .map_err(|e| format!("log_dest file {}: {e}", p.display()))?,
            Dest::Syslog => UnixDatagram::unbound()
                .and_then(|s| s.connect(SYSLOG_PATH).map(|()| s))
                .map(Out::Syslog)
                .map_err(|e| format!("log_dest syslog: cannot reach {SYSLOG_PATH}: {e}"))?,
        });
    }
    Ok(Sink {
        settings: settings.clone(),
        outs,
    })
}

fn install(sink: Sink) {
    LEVELS.store(sink.settings.levels.0, Ordering::Relaxed);
    CONNECTION_MESSAGES.store(sink.settings.connection_messages, Ordering::Relaxed);
    SINK.store(Some(Arc::new(sink)));
}

/// Open the destinations of `settings`; from then on every line goes there. Called once,
/// at start-up, before the shards run; a second call is refused (use `reload`).
pub fn init(settings: &Settings) -> Result<(), String> {
    if SINK.load().is_some() {
        return Err("the log is already set up".to_string());
    }
    install(open(settings)?);
    Ok(())
}

/// Log settings whose destinations are open, ready to replace the running ones.
pub struct Prepared(Sink);

/// Open the destinations of `settings` for a reload (SIGHUP), without switching to them
/// yet: an error (a file that cannot be opened, say) leaves the running log as it is.
pub fn prepare(settings: &Settings) -> Result<Prepared, String> {
    open(settings).map(Prepared)
}

/// Switch to prepared settings. Lines being written meanwhile go whole to the old
/// destinations or whole to the new ones.
pub fn switch(p: Prepared) {
    install(p.0);
}

/// Whether lines of level `l` are written: check it before building a costly line.
#[inline]
pub fn enabled(l: Level) -> bool {
    LEVELS.load(Ordering::Relaxed) & l.bit() != 0
}

/// Whether connection and disconnection lines are written (`connection_messages`).
#[inline]
pub fn connection_messages() -> bool {
    CONNECTION_MESSAGES.load(Ordering::Relaxed)
}

/// Write one line at level `l`.
pub fn emit(l: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(l) {
        return;
    }
    let guard = SINK.load();
    let Some(sink) = guard.as_ref() else {
        eprintln!("{}: {args}", unix_secs());
        return;
    };
    let line = format_line(&sink.settings, l, args);
    for out in &sink.outs {
        // A log that cannot be written is not a reason to stop serving.
        let _ = match out {
            Out::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Out::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Out::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(line.as_bytes()),
                Err(_) => Ok(()),
            },
            Out::Syslog(s) => s.send(syslog_line(l, args).as_bytes()).map(|_| ()),
        };
    }
}

/// Write one line, its level read from how it starts (`Level::of_line`).
pub fn emit_line(args: std::fmt::Arguments<'_>) {
    if SINK.load().is_none() {
        eprintln!("{}: {args}", unix_secs());
        return;
    }
    let text = args.to_string();
    emit(Level::of_line(&text), format_args!("{text}"));
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The timestamp as configured.
fn timestamp(s: &Settings) -> String {
    match &s.timestamp_format {
        Some(f) => chrono::Local::now().format(f).to_string(),
        None => unix_secs().to_string(),
    }
}

/// One line, newline included.
pub fn format_line(s: &Settings, l: Level, args: std::fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(128);
    match s.format {
        Format::Text => {
            if s.timestamp {
                let _ = write!(line, "{}: ", timestamp(s));
            }
            let _ = writeln!(line, "{args}");
        }
        Format::Json => {
            let mut v = serde_json::json!({ "level": l.name(), "msg": args.to_string() });
            if s.timestamp {
                v["time"] = match &s.timestamp_format {
                    Some(_) => serde_json::Value::from(timestamp(s)),
                    None => serde_json::Value::from(unix_secs()),
                };
            }
            let _ = writeln!(line, "{v}");
        }
    }
    line
}

/// RFC 3164 as /dev/log takes it: `<PRI>shardmq[PID]: text`.
fn syslog_line(l: Level, args: std::fmt::Arguments<'_>) -> String {
    let pri = SYSLOG_FACILITY_DAEMON * 8 + l.severity();
    format!("<{pri}>shardmq[{}]: {args}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_types_and_destinations_parse_like_mosquitto() {
        let mut set = LevelSet::NONE;
        set.add("error").expect("error");
        set.add("subscribe").expect("subscribe");
        assert!(set.has(Level::Error) && set.has(Level::Subscribe));
        assert!(!set.has(Level::Notice));
        assert!(set.add("chatter").is_err());
        set.add("all").expect("all");
        assert!(Level::ALL.iter().all(|l| set.has(*l)));
        assert_eq!(Dest::parse("stdout"), Ok(Some(Dest::Stdout)));
        assert_eq!(
            Dest::parse("file /var/log/shardmq.log"),
            Ok(Some(Dest::File("/var/log/shardmq.log".into())))
        );
        assert_eq!(Dest::parse("none"), Ok(None));
        for bad in ["file", "stdout x", "pigeon", "topic"] {
            assert!(Dest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_are_text_or_json_with_the_configured_timestamp() {
        let mut s = Settings::default();
        let t = format_line(&s, Level::Notice, format_args!("hello {}", 1));
        let (secs, rest) = t.split_once(": ").expect("prefix");
        assert!(secs.parse::<u64>().is_ok(), "{t}");
        assert_eq!(rest, "hello 1\n");
        s.timestamp = false;
        assert_eq!(format_line(&s, Level::Notice, format_args!("x")), "x\n");
        s.format = Format::Json;
        s.timestamp = true;
        s.timestamp_format = Some("%Y".into());
        let j = format_line(&s, Level::Warning, format_args!("a \"q\""));
        let v: serde_json::Value = serde_json::from_str(j.trim_end()).expect("json");
        assert_eq!(v["level"], "warning");
        assert_eq!(v["msg"], "a \"q\"");
        assert_eq!(v["time"].as_str().map(str::len), Some(4));
    }

    #[test]
    fn levels_of_unlabelled_lines() {
        assert_eq!(Level::of_line("Error: x"), Level::Error);
        assert_eq!(Level::of_line("Warning: x"), Level::Warning);
        assert_eq!(Level::of_line("Received PUBLISH from a"), Level::Debug);
        assert_eq!(Level::of_line("shardmq version 1 starting"), Level::Notice);
        assert!(valid_timestamp_format("%Y-%m-%dT%H:%M:%S"));
        assert!(!valid_timestamp_format("%Q"));
    }
}
