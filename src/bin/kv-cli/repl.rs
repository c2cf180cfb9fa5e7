//! Commands typed at a prompt (stdin is a terminal), or read one per line from stdin (a
//! pipe or a file, like `redis-cli < commands.txt`), over one session.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;

use crate::command::{self, Answer, Typed, HELP};
use crate::line;
use crate::output::Values;
use crate::session::Session;
use crate::Exit;

/// The environment variable naming the history file; empty or `/dev/null`: no history file.
pub const HISTORY_ENV: &str = "KV_CLI_HISTFILE";
/// The history file's name in `$HOME` when `KV_CLI_HISTFILE` is not set.
pub const HISTORY_NAME: &str = ".kv_cli_history";
/// Lines kept in the history (and its file): 1,000.
const HISTORY_LEN: usize = 1000;

/// What one line asked for.
enum Step {
    /// Go on to the next line; the command's exit code.
    Next(Exit),
    /// `quit`, `exit`, or stdout is gone.
    Stop(Exit),
}

/// The prompt `ADDR> ` with line editing and history, until Ctrl-D, Ctrl-C, `quit` or
/// `exit`. Connects at once and says so when that fails; every command connects again if
/// the connection is gone. Each command's error is printed as `(error) ...` and the prompt
/// goes on.
///
/// # Errors
/// The terminal cannot be read or set up.
pub fn prompt(mut session: Session, values: Values) -> Result<Exit> {
    let config = Config::builder()
        .max_history_size(HISTORY_LEN)
        .and_then(|c| c.history_ignore_dups(true))
        .context("history settings")?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<(), FileHistory> =
        Editor::with_config(config).context("cannot set up the terminal")?;
    let mut history = history_file();
    if let Some(path) = &history {
        if path.is_file() {
            if let Err(err) = editor.load_history(path) {
                eprintln!(
                    "kv-cli: cannot read the history file {}: {err}",
                    path.display()
                );
            }
        }
    }
    if !session.is_sharded() {
        if let Err(err) = session.client() {
            eprintln!("(error) {err:#}");
        }
    }
    let prompt = format!("{}> ", session.addr());
    loop {
        let text = match editor.readline(&prompt) {
            Ok(text) => text,
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(err) => return Err(err).context("cannot read the terminal"),
        };
        if !text.trim().is_empty() {
            editor.add_history_entry(text.as_str()).context("history")?;
            if let Some(path) = &history {
                if let Err(err) = editor.append_history(path) {
                    eprintln!(
                        "kv-cli: cannot write the history file {} (history is not saved): {err}",
                        path.display()
                    );
                    history = None;
                }
            }
        }
        match run_line(&mut session, values, text.as_bytes(), None) {
            Step::Next(_) => {}
            Step::Stop(_) => break,
        }
    }
    Ok(Exit::Ok)
}

/// Runs the commands of stdin, one per line (a `\r\n` ending is taken as `\n`), with no
/// prompt, until its end or `quit`/`exit`. Answers go to stdout, errors to stderr as
/// `(error) line N: ...`; every line is run whatever happened to the ones before.
///
/// # Errors
/// Stdin cannot be read. Otherwise the first exit code other than [`Exit::Ok`] that a
/// command gave: [`Exit::Missing`] for a missing key, [`Exit::Error`] for an error.
pub fn from_stdin(mut session: Session, values: Values) -> Result<Exit> {
    let mut first = Exit::Ok;
    for (number, text) in io::stdin().lock().split(b'\n').enumerate() {
        let mut text = text.context("cannot read stdin")?;
        if text.last() == Some(&b'\r') {
            text.pop();
        }
        match run_line(&mut session, values, &text, Some(number + 1)) {
            Step::Next(exit) => first = first.or(exit),
            Step::Stop(exit) => {
                first = first.or(exit);
                break;
            }
        }
    }
    Ok(first)
}

/// Splits, parses and runs one line; prints its answer on stdout or its error on stderr
/// (`(error) line N: ...` when `number` is given).
fn run_line(session: &mut Session, values: Values, text: &[u8], number: Option<usize>) -> Step {
    let error = |err: &dyn std::fmt::Display| match number {
        Some(number) => eprintln!("(error) line {number}: {err:#}"),
        None => eprintln!("(error) {err:#}"),
    };
    let typed = match line::split(text) {
        Ok(words) => command::parse(words),
        Err(err) => {
            error(&err);
            return Step::Next(Exit::Error);
        }
    };
    let command = match typed {
        Ok(Typed::Nothing) => return Step::Next(Exit::Ok),
        Ok(Typed::Quit) => return Step::Stop(Exit::Ok),
        Ok(Typed::Help) => {
            return match writeln!(io::stdout(), "{HELP}") {
                Ok(()) => Step::Next(Exit::Ok),
                Err(_) => Step::Stop(Exit::Error),
            };
        }
        Ok(Typed::Command(command)) => command,
        Err(err) => {
            error(&err);
            return Step::Next(Exit::Error);
        }
    };
    match session.run(&command) {
        Ok(answer) => {
            let exit = match answer {
                Answer::Missing => Exit::Missing,
                _ => Exit::Ok,
            };
            match values.write(&mut io::stdout().lock(), &answer) {
                Ok(()) => Step::Next(exit),
                // Nobody reads the answers any more (a closed pipe).
                Err(_) => Step::Stop(Exit::Error),
            }
        }
        Err(err) => {
            error(&format_args!("{err:#}"));
            Step::Next(Exit::Error)
        }
    }
}

/// `$KV_CLI_HISTFILE` (empty or `/dev/null`: none), else `$HOME/.kv_cli_history`, else
/// (no `HOME`) none. A path that exists and is not a regular file is not used.
fn history_file() -> Option<PathBuf> {
    let path = match std::env::var_os(HISTORY_ENV) {
        Some(path) if path.is_empty() || path == "/dev/null" => return None,
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").filter(|home: &OsString| !home.is_empty())?;
            PathBuf::from(home).join(HISTORY_NAME)
        }
    };
    if path.exists() && !path.is_file() {
        eprintln!(
            "kv-cli: {} is not a regular file; history is not saved",
            path.display()
        );
        return None;
    }
    Some(path)
}
