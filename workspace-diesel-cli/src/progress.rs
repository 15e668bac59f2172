//! The progress bars and the log records share stderr: every bar is drawn through one
//! [`MultiProgress`], and [`LogWriter`] writes each log record while the bars are cleared
//! (indicatif's `suspend`), so a record never lands inside a bar and no stale bar line is left
//! in the scrollback.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};

fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// `bar`, drawn on stderr with the others, below the log records.
pub(crate) fn add(bar: ProgressBar) -> ProgressBar {
    bars().add(bar)
}

/// A writer for the tracing subscriber: each write goes to stderr with the bars cleared, then
/// the bars are drawn again.
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
