//! Every binary's shell completions and man pages, written from its own clap definitions:
//! `--generate-completions SHELL` and `--generate-man [SUBCOMMAND]...`, taken only as the
//! first argument, so that a binary needs one line at the top of `main`:
//!
//! ```ignore
//! generate::handle::<Args>();
//! ```
//!
//! They are left out of `--help` (which stays about running the binary); the man page and
//! the completions list them, as the README does.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process;

use clap::{value_parser, Arg, ArgGroup, Command, CommandFactory};
use clap_complete::Shell;

/// The option that prints a completion script: `--generate-completions SHELL`.
const COMPLETIONS: &str = "generate-completions";
/// The option that prints a man page: `--generate-man [SUBCOMMAND]...`.
const MAN: &str = "generate-man";

/// Writes the completion script or the man page and exits 0 when the first argument is
/// `--generate-completions SHELL` (bash, zsh, fish, elvish or powershell) or
/// `--generate-man [SUBCOMMAND]...`; returns at once, having done nothing, otherwise.
///
/// `--generate-man` alone prints the binary's page (roff, section 1, titled with its name
/// in capitals; it lists the subcommands, if any); followed by a subcommand's name (or a
/// path of them) it prints that subcommand's page, named `BINARY-SUBCOMMAND`.
///
/// Exits 2 with clap's usage message when the options are misused (a shell clap_complete
/// does not know, an unknown subcommand, another argument beside them), and 1 when stdout
/// cannot be written (a closed pipe exits 0, quietly, as its reader has all it wanted).
pub fn handle<P: CommandFactory>() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !args.get(1).is_some_and(is_request) {
        return;
    }
    let cmd = P::command();
    let output = match render(cmd, args) {
        Ok(output) => output,
        Err(err) => err.exit(),
    };
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&output).and_then(|()| stdout.flush()) {
        Ok(()) => process::exit(0),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => process::exit(0),
        Err(err) => {
            eprintln!("cannot write to stdout: {err}");
            process::exit(1)
        }
    }
}

/// Whether `arg` is one of the two options, alone or as `--option=VALUE`.
fn is_request(arg: &OsString) -> bool {
    let Some(arg) = arg.to_str() else {
        return false;
    };
    [COMPLETIONS, MAN].iter().any(|name| {
        arg.strip_prefix("--")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('='))
    })
}

/// The two options, for the parse of a request and for the documentation of `cmd`.
fn options() -> [Arg; 2] {
    [
        Arg::new(COMPLETIONS)
            .long(COMPLETIONS)
            .value_name("SHELL")
            .value_parser(value_parser!(Shell))
            .help("Print a completion script for SHELL to stdout, and exit"),
        Arg::new(MAN)
            .long(MAN)
            .value_name("SUBCOMMAND")
            .num_args(0..)
            .help(
                "Print the man page (roff) to stdout, and exit; \
                 with SUBCOMMAND, that subcommand's page",
            ),
    ]
}

/// The script or the page `args` asks for, rendered from `cmd`.
///
/// # Errors
/// clap's error, formatted for `cmd`, when `args` are not one of the two options with
/// valid values.
fn render(cmd: Command, args: Vec<OsString>) -> Result<Vec<u8>, clap::Error> {
    let mut cmd = cmd.args(options());
    let name = cmd.get_name().to_owned();
    // Only the two options, one of them, and nothing else.
    let matches = Command::new("generate")
        .bin_name(name.clone())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args(options())
        .group(
            ArgGroup::new("generate")
                .args([COMPLETIONS, MAN])
                .required(true),
        )
        .try_get_matches_from(args)?;
    let mut output = Vec::new();
    if let Some(shell) = matches.get_one::<Shell>(COMPLETIONS) {
        clap_complete::generate(*shell, &mut cmd, name, &mut output);
        return Ok(output);
    }
    let path: Vec<&String> = matches
        .get_many::<String>(MAN)
        .map(Iterator::collect)
        .unwrap_or_default();
    // The footer's source is the binary and its version, on a subcommand's page too.
    let source = format!("{name} {}", cmd.get_version().unwrap_or_default());
    let page = man_page(cmd, &path)?;
    let title = page
        .get_display_name()
        .unwrap_or_else(|| page.get_name())
        .to_uppercase();
    clap_mangen::Man::new(page)
        .title(title)
        .source(source)
        .render(&mut output)
        .map_err(|err| clap::Error::raw(clap::error::ErrorKind::Io, err))?;
    Ok(output)
}

/// The command whose page is asked for: `cmd` itself, or the subcommand at `path` below it.
///
/// # Errors
/// A name in `path` that is not a subcommand, with the names there are.
fn man_page(cmd: Command, path: &[&String]) -> Result<Command, clap::Error> {
    // As clap_mangen::generate_to: no `help` subcommand of its own, and every subcommand's
    // display name (`kv-cli-get`) set by the build.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut page = cmd.clone();
    for name in path {
        let Some(sub) = page.find_subcommand(name.as_str()).cloned() else {
            let names: Vec<&str> = page
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(Command::get_name)
                .collect();
            let there = if names.is_empty() {
                format!("{} has no subcommands", page.get_name())
            } else {
                format!("{} has {}", page.get_name(), names.join(", "))
            };
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("--{MAN}: no subcommand {name:?}; {there}"),
            )
            .format(&mut cmd));
        };
        page = sub;
    }
    Ok(page)
}
