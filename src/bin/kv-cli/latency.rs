//! `--latency` and `--latency-history`, as redis-cli's: PING frames one after another on one
//! connection, and the minimum, maximum and mean round trip in milliseconds.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use signal_hook::consts::SIGINT;

use crate::session::Session;

/// Default `--interval`: 10 ms between PINGs, redis-cli's.
pub const DEFAULT_INTERVAL_MS: u64 = 10;
/// Default `--history-period`: 15 s, redis-cli's.
pub const DEFAULT_HISTORY_PERIOD_SECS: f64 = 15.0;
/// How often `--latency` prints its running figures when stdout is not a terminal: 1 s.
const PIPE_PERIOD: Duration = Duration::from_secs(1);

/// The latency flags.
#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Measure the round trip of PING frames until Ctrl-C (or --count), printing
    /// "min: 0.05, max: 0.31, avg: 0.09 (1234 samples)" in milliseconds: one line updated in
    /// place on a terminal, a new line every second otherwise. Takes no command.
    #[arg(long)]
    pub latency: bool,
    /// As --latency, but the figures start afresh every --history-period, each period on a
    /// line of its own ending "-- 15.00 seconds range".
    #[arg(long)]
    pub latency_history: bool,
    /// Milliseconds to wait between two PINGs [default: 10].
    #[arg(long, value_name = "MS")]
    pub interval: Option<u64>,
    /// Stop after N PINGs (at least 1) and print the figures; without it, run until Ctrl-C.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Seconds each --latency-history line covers [default: 15].
    #[arg(long, value_name = "SECS")]
    pub history_period: Option<f64>,
}

impl LatencyArgs {
    /// Whether a latency mode was asked for.
    ///
    /// # Errors
    /// `--interval`, `--count` or `--history-period` without a latency mode,
    /// `--history-period` without `--latency-history`.
    pub fn enabled(&self) -> Result<bool> {
        let enabled = self.latency || self.latency_history;
        if !enabled && (self.interval.is_some() || self.count.is_some()) {
            bail!("--interval and --count go with --latency or --latency-history");
        }
        if !self.latency_history && self.history_period.is_some() {
            bail!("--history-period goes with --latency-history");
        }
        Ok(enabled)
    }
}

/// The samples of one period.
struct Window {
    start: Instant,
    min: Duration,
    max: Duration,
    sum: Duration,
    count: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            start: Instant::now(),
            min: Duration::MAX,
            max: Duration::ZERO,
            sum: Duration::ZERO,
            count: 0,
        }
    }

    fn add(&mut self, rtt: Duration) {
        self.min = self.min.min(rtt);
        self.max = self.max.max(rtt);
        self.sum = self.sum.saturating_add(rtt);
        self.count += 1;
    }

    /// `min: 0.05, max: 0.31, avg: 0.09 (1234 samples)`, in milliseconds.
    fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let avg = self.sum.as_secs_f64() * 1e3 / self.count.max(1) as f64;
        format!(
            "min: {:.2}, max: {:.2}, avg: {avg:.2} ({} samples)",
            ms(self.min.min(self.max)),
            ms(self.max),
            self.count
        )
    }

    /// The line with how long the period lasted, for --latency-history.
    fn range_line(&self) -> String {
        format!(
            "{} -- {:.2} seconds range",
            self.line(),
            self.start.elapsed().as_secs_f64()
        )
    }
}

/// Where the lines go: updated in place on a terminal, appended otherwise.
struct Screen<W: Write> {
    out: W,
    terminal: bool,
    /// A line is on screen without its newline (terminal only).
    open: bool,
}

impl<W: Write> Screen<W> {
    /// Shows `line` in place of the open one (terminal), or does nothing (not a terminal).
    fn update(&mut self, line: &str) -> io::Result<()> {
        if self.terminal {
            // Back to column 1, erase the line (the ANSI sequences redis-cli writes).
            write!(self.out, "\x1b[0G\x1b[2K{line}")?;
            self.open = true;
            self.out.flush()?;
        }
        Ok(())
    }

    /// Ends with `line` on a line of its own, in place of the open one on a terminal.
    fn finish(&mut self, line: &str) -> io::Result<()> {
        if self.terminal {
            write!(self.out, "\x1b[0G\x1b[2K")?;
        }
        writeln!(self.out, "{line}")?;
        self.open = false;
        self.out.flush()
    }

    /// Ends an open line, so that what follows starts on its own.
    fn close(&mut self) -> io::Result<()> {
        if self.open {
            writeln!(self.out)?;
            self.open = false;
        }
        self.out.flush()
    }
}

/// Runs the latency mode `args` asks for on `session`'s connection until `--count` samples
/// or Ctrl-C (the first Ctrl-C stops after the PING under way and prints the figures, a
/// second one exits at once, with code 1). `terminal`: stdout is a terminal.
///
/// # Errors
/// The connection cannot be made, a PING fails (the connection closed, no PONG within
/// `--timeout`), or stdout cannot be written.
pub fn run(session: &mut Session, args: &LatencyArgs, terminal: bool) -> Result<()> {
    let interval = Duration::from_millis(args.interval.unwrap_or(DEFAULT_INTERVAL_MS));
    let history = args.latency_history;
    let period = if history {
        let secs = args.history_period.unwrap_or(DEFAULT_HISTORY_PERIOD_SECS);
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|p| !p.is_zero())
            .context("--history-period must be a positive number of seconds")?
    } else {
        PIPE_PERIOD
    };
    let stop = Arc::new(AtomicBool::new(false));
    // A second Ctrl-C, with `stop` already set, exits at once; the first sets `stop`.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 1, Arc::clone(&stop))
        .and_then(|_| signal_hook::flag::register(SIGINT, Arc::clone(&stop)))
        .context("cannot install the Ctrl-C handler")?;
    let client = session.client()?;
    let mut screen = Screen {
        out: io::stdout().lock(),
        terminal,
        open: false,
    };
    let mut window = Window::new();
    // Without --latency-history on a pipe: when the running figures were last printed.
    let mut printed = Instant::now();
    let mut samples = 0u64;
    loop {
        let rtt = match client.ping() {
            Ok(rtt) => rtt,
            Err(err) => {
                screen.close()?;
                return Err(err).context("PING failed");
            }
        };
        window.add(rtt);
        samples += 1;
        screen.update(&window.line())?;
        let done = stop.load(Ordering::Relaxed) || args.count.is_some_and(|n| samples >= n);
        if history && window.start.elapsed() >= period {
            screen.finish(&window.range_line())?;
            window = Window::new();
        } else if !history && !terminal && printed.elapsed() >= period && !done {
            screen.finish(&window.line())?;
            printed = Instant::now();
        }
        if done {
            break;
        }
        std::thread::sleep(interval);
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    match (history, window.count) {
        (true, 0) => screen.close()?,
        (true, _) => screen.finish(&window.range_line())?,
        (false, _) => screen.finish(&window.line())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_in_milliseconds_with_two_decimals() {
        let mut window = Window::new();
        for us in [50, 310, 90] {
            window.add(Duration::from_micros(us));
        }
        assert_eq!(window.line(), "min: 0.05, max: 0.31, avg: 0.15 (3 samples)");
    }

    fn screen(terminal: bool) -> Screen<Vec<u8>> {
        Screen {
            out: Vec::new(),
            terminal,
            open: false,
        }
    }

    #[test]
    fn a_terminal_gets_one_line_updated_in_place() {
        let mut screen = screen(true);
        screen.update("a").expect("write");
        screen.update("b").expect("write");
        screen.finish("c").expect("write");
        assert_eq!(
            String::from_utf8_lossy(&screen.out),
            "\x1b[0G\x1b[2Ka\x1b[0G\x1b[2Kb\x1b[0G\x1b[2Kc\n"
        );
    }

    #[test]
    fn a_pipe_gets_whole_lines_only() {
        let mut screen = screen(false);
        screen.update("a").expect("write");
        screen.finish("b").expect("write");
        assert_eq!(String::from_utf8_lossy(&screen.out), "b\n");
    }
}
