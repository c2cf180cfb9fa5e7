//! `--config FILE`: a server's settings from a TOML file whose keys are its long flags
//! without their dashes.
//!
//! ```toml
//! addr = "127.0.0.1:7878"
//! max-connections = 10000
//! fsync = "always"
//! in-memory = true
//! ```
//!
//! Each key becomes the argument it names (`--max-connections=10000`), and clap parses those
//! arguments as it parses the command line: a value in the file gets exactly the checks, and
//! the messages, of the same value given as a flag. The command line wins over the file, and
//! the file over the built-in defaults.
//!
//! What each TOML value stands for:
//! - a string, an integer or a float: the flag's value, as written (`max-connections = 1.5`
//!   is refused as `--max-connections 1.5` is);
//! - `true` for a flag that takes no value: the flag; `false`: nothing (the flag stays off);
//! - an array, for a flag that may be repeated: the flag once per element.
//!
//! Anything else (a key no flag has, a table, a date, `true` for a flag that takes a value, a
//! string for one that does not) is an error naming the key and the file, and exits 2 as a
//! bad flag does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches, Parser, ValueHint};

/// The `--config` flag. Flatten it into a server's arguments, and parse them with [`parse`].
#[derive(clap::Args, Debug)]
pub struct ConfigFile {
    /// Read settings from this TOML file: each key is a long flag without its dashes
    /// (max-connections = 100, fsync = "always", in-memory = true, an array for a flag that
    /// may be repeated). A flag on the command line overrides the file's setting of it, and
    /// of any flag it cannot be used with; the file overrides the defaults shown here.
    /// Relative paths in the file are taken from the working directory.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
}

/// The id of [`ConfigFile::config`] in the parsed arguments.
const CONFIG: &str = "config";

/// One key of the file, as the arguments it stands for.
#[derive(Debug)]
struct Setting {
    /// The key, which is the flag's long name.
    key: String,
    /// The flag's id in the command.
    id: clap::Id,
    /// `--key=value` (once per element of an array), `--key` for a flag set to `true`,
    /// nothing for one set to `false`.
    args: Vec<OsString>,
}

/// Parses the process's arguments as `A::parse()` does, with the settings of the `--config`
/// file, if one is given, under those of the command line.
///
/// Logs (at info) the keys taken from the file and those the command line overrode.
///
/// Exits as `A::parse()` does: 0 after `--help` or `--version`, 2 with clap's message
/// after a bad argument, and 2 with a message naming the file (and the key, where there is
/// one) when the file cannot be read, is not TOML, or holds an unknown key or a bad value.
pub fn parse<A: Parser>() -> A {
    let mut cmd = A::command();
    match parse_from(&mut cmd, std::env::args_os().collect()) {
        Ok(args) => args,
        Err(err) => err.exit(),
    }
}

/// [`parse`] of `argv` (the binary's name first) against `cmd`, which is `A`'s command.
///
/// # Errors
/// clap's error for a bad command line, or one naming the config file for a bad file.
fn parse_from<A: FromArgMatches>(cmd: &mut Command, argv: Vec<OsString>) -> Result<A, clap::Error> {
    let cli = cmd.try_get_matches_from_mut(argv.iter().cloned())?;
    let Some(path) = cli.get_one::<PathBuf>(CONFIG).cloned() else {
        return A::from_arg_matches(&cli).map_err(|err| err.format(cmd));
    };
    let settings = read(cmd, &path)?;
    let bin = argv
        .first()
        .cloned()
        .unwrap_or_else(|| cmd.get_name().into());
    // Each key alone, then the file as a whole, so that an error names the key it is about
    // whenever it is about one.
    for setting in &settings {
        check(cmd, &bin, &setting.args)
            .map_err(|err| in_file(cmd, &path, Some(&setting.key), &err))?;
    }
    let all: Vec<OsString> = settings.iter().flat_map(|s| s.args.clone()).collect();
    check(cmd, &bin, &all).map_err(|err| in_file(cmd, &path, None, &err))?;

    let (overridden, kept): (Vec<&Setting>, Vec<&Setting>) = settings
        .iter()
        .partition(|setting| overridden_by_command_line(cmd, &cli, &setting.id));
    let merged = std::iter::once(bin)
        .chain(kept.iter().flat_map(|s| s.args.iter().cloned()))
        .chain(argv.iter().skip(1).cloned());
    let matches = cmd
        .try_get_matches_from_mut(merged)
        .map_err(|err| in_file(cmd, &path, None, &err))?;
    let keys = |settings: &[&Setting]| -> String {
        let keys: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    };
    log::info!(
        "{}: settings from {}: {}; overridden by the command line: {}",
        cmd.get_name(),
        path.display(),
        keys(&kept),
        keys(&overridden)
    );
    A::from_arg_matches(&matches).map_err(|err| err.format(cmd))
}

/// The settings of the TOML file at `path`, one per key, in the file's key order
/// (alphabetical).
///
/// # Errors
/// The file cannot be read, is not TOML, or holds a key or a value [`setting`] refuses.
fn read(cmd: &mut Command, path: &Path) -> Result<Vec<Setting>, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        cmd.error(
            ErrorKind::Io,
            format!("cannot read the config file {}: {err}", path.display()),
        )
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|err| {
        cmd.error(
            ErrorKind::InvalidValue,
            format!(
                "the config file {} is not valid TOML: {}",
                path.display(),
                err.to_string().trim_end()
            ),
        )
    })?;
    table
        .iter()
        .map(|(key, value)| setting(cmd, path, key, value))
        .collect()
}

/// The flags a file may set: those with a long name, except --help, --version and
/// --config.
fn settable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|arg| {
        arg.get_long().is_some()
            && arg.get_id() != CONFIG
            && !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// `key = value` of the file at `path` as arguments.
///
/// # Errors
/// No flag is named `key` (with the closest name there is, if one is close), or `value` is
/// of a type the flag cannot take.
fn setting(
    cmd: &mut Command,
    path: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<Setting, clap::Error> {
    let Some(arg) = settable(cmd).find(|arg| arg.get_long() == Some(key)) else {
        let message = unknown_key(cmd, path, key);
        return Err(cmd.error(ErrorKind::UnknownArgument, message));
    };
    let id = arg.get_id().clone();
    let takes_values = arg.get_action().takes_values();
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let flag = |text: &str| OsString::from(format!("--{key}={text}"));
    let args = match value {
        toml::Value::Boolean(on) if !takes_values => {
            if *on {
                vec![OsString::from(format!("--{key}"))]
            } else {
                Vec::new()
            }
        }
        _ if !takes_values => {
            return Err(wrong_type(cmd, path, key, "true or false", value));
        }
        toml::Value::Array(items) if repeatable => items
            .iter()
            .map(|item| {
                scalar(item).map(|text| flag(&text)).ok_or_else(|| {
                    wrong_type(cmd, path, key, "an array of strings or numbers", value)
                })
            })
            .collect::<Result<_, _>>()?,
        toml::Value::Array(_) => {
            return Err(wrong_type(cmd, path, key, "one value", value));
        }
        _ => match scalar(value) {
            Some(text) => vec![flag(&text)],
            None if repeatable => {
                return Err(wrong_type(cmd, path, key, "a value or an array", value));
            }
            None => return Err(wrong_type(cmd, path, key, "one value", value)),
        },
    };
    Ok(Setting {
        key: key.to_owned(),
        id,
        args,
    })
}

/// A string, a number or a boolean as the text of a flag's value; `None` for an array, a
/// table or a date.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The message for a `key` no settable flag has: the closest key if one is close (by the
/// measure and threshold clap uses to suggest a flag), or where the keys are listed.
fn unknown_key(cmd: &Command, path: &Path, key: &str) -> String {
    let path = path.display();
    if cmd.get_arguments().any(|arg| arg.get_long() == Some(key)) {
        return format!("{key:?} cannot be set in a config file (in {path})");
    }
    let closest = settable(cmd)
        .filter_map(Arg::get_long)
        .map(|long| (strsim::jaro(key, long), long))
        .filter(|(similarity, _)| *similarity > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, long)) => format!("unknown key {key:?} in {path}; did you mean {long:?}?"),
        None => format!(
            "unknown key {key:?} in {path}; the keys are the long flags of --help without \
             their dashes"
        ),
    }
}

/// The error for `key = value` when the flag takes `expected`.
fn wrong_type(
    cmd: &mut Command,
    path: &Path,
    key: &str,
    expected: &str,
    value: &toml::Value,
) -> clap::Error {
    cmd.error(
        ErrorKind::InvalidValue,
        format!(
            "in {}, key {key:?}: {expected} expected, not {}",
            path.display(),
            article(value.type_str())
        ),
    )
}

/// `a string`, `an integer`, ... for a TOML type's name.
fn article(type_name: &str) -> String {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {type_name}")
    } else {
        format!("a {type_name}")
    }
}

/// Parses `bin args` alone, as a check of the file's arguments: what the command line must
/// add (a required argument or subcommand) is no fault of the file.
fn check(cmd: &mut Command, bin: &OsString, args: &[OsString]) -> Result<(), clap::Error> {
    match cmd.try_get_matches_from_mut(std::iter::once(bin.clone()).chain(args.iter().cloned())) {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::MissingRequiredArgument
                    | ErrorKind::MissingSubcommand
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// clap's `err` about arguments taken from the file at `path` (from its `key`, if known),
/// restated to name them.
fn in_file(cmd: &mut Command, path: &Path, key: Option<&str>, err: &clap::Error) -> clap::Error {
    // The message without its usage and tips, which follow the first blank line.
    let rendered = err.render().to_string();
    let message = rendered.split("\n\n").next().unwrap_or_default().trim_end();
    let reason = message.strip_prefix("error: ").unwrap_or(message);
    let place = match key {
        Some(key) => format!("in {}, key {key:?}", path.display()),
        None => format!("with the settings of {}", path.display()),
    };
    cmd.error(err.kind(), format!("{place}: {reason}"))
}

/// Whether the command line (`cli`) gave the flag `id`, or a flag that cannot be used with
/// it: either way the file's setting of `id` gives way.
fn overridden_by_command_line(cmd: &Command, cli: &ArgMatches, id: &clap::Id) -> bool {
    let Some(arg) = cmd.get_arguments().find(|arg| arg.get_id() == id) else {
        return false;
    };
    cmd.get_arguments()
        .filter(|other| cli.value_source(other.get_id().as_str()) == Some(ValueSource::CommandLine))
        .any(|other| other.get_id() == id || conflict(cmd, arg, other))
}

/// Whether `a` and `b` cannot be used together (clap records a conflict on one side only).
fn conflict(cmd: &Command, a: &Arg, b: &Arg) -> bool {
    let lists = |x: &Arg, y: &Arg| {
        cmd.get_arg_conflicts_with(x)
            .iter()
            .any(|c| c.get_id() == y.get_id())
    };
    lists(a, b) || lists(b, a)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::CommandFactory;

    use super::*;

    /// A command with what the servers do not have yet: a repeatable flag, and a conflict
    /// with a flag that has a default.
    #[derive(Parser, Debug)]
    #[command(name = "test-server")]
    struct Args {
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long = "peer")]
        peers: Vec<String>,
        #[arg(long, conflicts_with = "count")]
        quiet: bool,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigFile,
    }

    fn parse_with(file: &str, argv: &[&str]) -> Result<Args, String> {
        let dir = std::env::temp_dir().join(format!("config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = dir.join(format!("{}.toml", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        let mut full: Vec<OsString> = vec!["test-server".into(), "--config".into()];
        full.push(path.clone().into());
        full.extend(argv.iter().map(OsString::from));
        let result = parse_from::<Args>(&mut Args::command(), full).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn an_array_repeats_the_flag_and_the_command_line_replaces_it() {
        let args = parse_with("peer = [\"a\", \"b\"]\ncount = 3\n", &[]).expect("valid file");
        assert_eq!(args.peers, ["a", "b"]);
        assert_eq!(args.count, 3);
        let args = parse_with("peer = [\"a\", \"b\"]\n", &["--peer", "c"]).expect("valid file");
        assert_eq!(args.peers, ["c"]);
    }

    #[test]
    fn a_command_line_flag_drops_the_file_settings_it_conflicts_with() {
        let args = parse_with("quiet = true\n", &["--count", "2"])
            .expect("the command line's --count wins over the file's quiet");
        assert!(!args.quiet);
        assert_eq!(args.count, 2);
        let args = parse_with("count = 2\n", &["--quiet"])
            .expect("the command line's --quiet wins over the file's count");
        assert!(args.quiet);
        assert_eq!(args.count, 1);
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (file, key) in [
            ("quiet = \"yes\"\n", "\"quiet\""),
            ("count = [1, 2]\n", "\"count\""),
            ("peer = [[\"a\"]]\n", "\"peer\""),
            ("count = { a = 1 }\n", "\"count\""),
            ("count = -4\n", "\"count\""),
        ] {
            let err = parse_with(file, &[]).expect_err(file);
            assert!(err.contains(key), "{file:?} gave {err:?}");
        }
    }

    #[test]
    fn a_value_starting_with_a_dash_stays_a_value() {
        let args = parse_with("name = \"--count\"\n", &[]).expect("valid file");
        assert_eq!(args.name.as_deref(), Some("--count"));
    }
}
