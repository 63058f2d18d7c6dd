//! Levelled log lines: every module reports through `tracing` events (error, warn, info,
//! debug, trace) with their fields; this module decides where the lines go and how they look.
//!
//! On a terminal or into a file a line reads `clipada: warning: frame 12: ... key=value`. Under
//! systemd, whose journal stream standard error then is (`JOURNAL_STREAM`, systemd.exec(5)),
//! each line starts with its syslog priority (`<4>...`), which journald stores as the entry's
//! `PRIORITY`: `journalctl -u clipada -p warning` shows warnings and errors only. Nothing is
//! logged per good frame at the default level, so the loop's cost does not depend on it.
//!
//! Whatever an event says, one event is one line: control characters (a newline in a file
//! name, a terminal escape) and invisible reordering marks are written escaped, so no input can
//! forge a line or its priority. A failed write of a log line (standard error closed) is
//! dropped, never a crash.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How a log line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `clipada: warning: message key=value`, for a person or a file.
    Plain,
    /// `<4>message key=value`: led by the syslog priority, which journald keeps.
    Journal,
}

impl Style {
    /// `Journal` when standard error is the journal stream systemd names in `JOURNAL_STREAM`
    /// (`device:inode`), else `Plain` (a redirected stderr of a service is not the journal).
    pub(crate) fn detect() -> Style {
        Style::for_stream(std::env::var_os("JOURNAL_STREAM").as_deref(), std::io::stderr())
    }

    /// `Journal` when `journal_stream` (`device:inode`) names the file `output` is.
    fn for_stream(journal_stream: Option<&std::ffi::OsStr>, output: impl std::os::fd::AsFd) -> Style {
        let (Some(stream), Ok(stat)) = (journal_stream, rustix::fs::fstat(output)) else { return Style::Plain };
        if stream.to_str() == Some(format!("{}:{}", stat.st_dev, stat.st_ino).as_str()) {
            Style::Journal
        } else {
            Style::Plain
        }
    }
}

/// The most detailed level shown: info by default, one step more per `-v` (debug, trace), one
/// less per `-q` (warn, error; errors are always shown).
pub fn level(verbose: u8, quiet: u8) -> LevelFilter {
    match i16::from(verbose) - i16::from(quiet) {
        ..=-2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The command-line flag that selects `level` (none for the default), so that a process this
/// one starts (the station's worker) logs at the same level.
pub fn flag(level: LevelFilter) -> Option<&'static str> {
    match level {
        LevelFilter::TRACE => Some("-vv"),
        LevelFilter::DEBUG => Some("-v"),
        LevelFilter::WARN => Some("-q"),
        LevelFilter::ERROR | LevelFilter::OFF => Some("-qq"),
        _ => None,
    }
}

/// A subscriber writing events up to `level` as `style` lines, one write per line.
pub(crate) fn subscriber<W>(level: LevelFilter, style: Style, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().with_max_level(level).event_format(Lines(style)).with_writer(writer).finish()
}

/// Sends this process's events to standard error from here on (`Style::detect`). Fails only
/// when a subscriber was installed before.
pub(crate) fn init(level: LevelFilter) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(subscriber(level, Style::detect(), || StandardError))
        .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// Runs `f` with this thread's events (all levels) written as plain lines into the returned
/// text: what the command line would have shown, for tests and for embedding.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let shared = buffer.clone();
    let writer = move || SharedBuffer(shared.clone());
    let result = tracing::subscriber::with_default(subscriber(LevelFilter::TRACE, Style::Plain, writer), f);
    let bytes = std::mem::take(&mut *buffer.lock().unwrap_or_else(PoisonError::into_inner));
    (result, String::from_utf8_lossy(&bytes).into_owned())
}

/// Standard error, where a failed write is dropped: tracing-subscriber panics on a write error,
/// and a log line that cannot be shown is no reason to stop judging parts.
struct StandardError;

impl Write for StandardError {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `text` with control characters (newlines, escapes), line and paragraph separators and
/// bidirectional reordering marks written as `\u{..}`: a file name can never forge a line of
/// output or a log line, move the terminal's cursor or show text in another order than it is.
pub(crate) fn escape_controls(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// A writer appending to a buffer that outlives it.
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The line format of a `Style`.
struct Lines(Style);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, context: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = *event.metadata().level();
        match self.0 {
            Style::Journal => write!(writer, "<{}>", syslog_priority(level))?,
            Style::Plain => {
                write!(writer, "clipada: ")?;
                if let Some(word) = level_word(level) {
                    write!(writer, "{word}: ")?;
                }
            }
        }
        let mut fields = String::new();
        context.format_fields(Writer::new(&mut fields), event)?;
        writeln!(writer, "{}", escape_controls(&fields))
    }
}

/// The syslog priority journald files a line of this level under.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The word a plain line names its level with; none for info, the normal case.
fn level_word(level: Level) -> Option<&'static str> {
    match level {
        Level::ERROR => Some("error"),
        Level::WARN => Some("warning"),
        Level::INFO => None,
        Level::DEBUG => Some("debug"),
        Level::TRACE => Some("trace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_selects_its_level_and_quiet_never_hides_errors() {
        assert_eq!(level(0, 0), LevelFilter::INFO);
        assert_eq!(level(1, 0), LevelFilter::DEBUG);
        assert_eq!(level(5, 0), LevelFilter::TRACE);
        assert_eq!(level(0, 1), LevelFilter::WARN);
        assert_eq!(level(0, 9), LevelFilter::ERROR);
        for (verbose, quiet) in [(0, 0), (1, 0), (2, 0), (0, 1), (0, 2)] {
            let chosen = level(verbose, quiet);
            let again = match flag(chosen) {
                None => level(0, 0),
                Some(flag) => level(flag.matches('v').count() as u8, flag.matches('q').count() as u8),
            };
            assert_eq!(again, chosen, "-v {verbose} -q {quiet}");
        }
    }

    #[test]
    fn plain_lines_name_the_level_and_keep_fields_and_journal_lines_lead_with_the_priority() {
        let ((), text) = capture(|| {
            tracing::info!(frames = 3, "started");
            tracing::warn!("slow");
            tracing::error!(path = "a.png", "not judged");
        });
        assert_eq!(
            text,
            "clipada: started frames=3\nclipada: warning: slow\nclipada: error: not judged path=\"a.png\"\n"
        );

        let buffer = Arc::new(Mutex::new(Vec::new()));
        let shared = buffer.clone();
        let journal = subscriber(LevelFilter::WARN, Style::Journal, move || SharedBuffer(shared.clone()));
        tracing::subscriber::with_default(journal, || {
            tracing::info!("hidden below warn");
            tracing::warn!("slow");
            tracing::error!("lost");
        });
        assert_eq!(String::from_utf8(buffer.lock().unwrap().clone()).unwrap(), "<4>slow\n<3>lost\n");
    }

    #[test]
    fn one_event_is_one_line_whatever_it_says() {
        let ((), text) = capture(|| {
            tracing::error!("frame 2: {}: not judged", "b\n<6>forged.png\u{1b}[2J\u{202e}gnp.x");
            tracing::warn!(file = "a\r\nclipada: PASS", "slow");
        });
        assert_eq!(
            text,
            "clipada: error: frame 2: b\\u{a}<6>forged.png\\x1b[2J\\u{202e}gnp.x: not judged\n\
             clipada: warning: slow file=\"a\\r\\nclipada: PASS\"\n"
        );
        assert_eq!(escape_controls("plain text, ünïcode"), "plain text, ünïcode");
    }

    #[test]
    fn journal_style_only_when_the_output_is_the_named_stream() {
        let file = tempfile::tempfile().unwrap();
        let stat = rustix::fs::fstat(&file).unwrap();
        let named = std::ffi::OsString::from(format!("{}:{}", stat.st_dev, stat.st_ino));
        assert_eq!(Style::for_stream(Some(&named), &file), Style::Journal);
        let other = std::ffi::OsString::from(format!("{}:{}", stat.st_dev, stat.st_ino + 1));
        assert_eq!(Style::for_stream(Some(&other), &file), Style::Plain);
        assert_eq!(Style::for_stream(None, &file), Style::Plain);
    }
}
