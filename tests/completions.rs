//! Every binary's `--generate-completions SHELL` and `--generate-man`, run as processes: the
//! scripts name the binary and every flag of its `--help`, bash's parses and completes, and
//! the man pages render (through `man` or `groff` when installed) with their flags and, for
//! kv-cli, its subcommands.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BINARIES: [(&str, &str); 4] = [
    ("kv-server", env!("CARGO_BIN_EXE_kv-server")),
    ("echo-server", env!("CARGO_BIN_EXE_echo-server")),
    ("kv-cli", env!("CARGO_BIN_EXE_kv-cli")),
    ("courier-bench", env!("CARGO_BIN_EXE_courier-bench")),
];

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

fn run(exe: &str, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {exe} {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `exe args`, asserts it exits 0 with something on stdout, and returns stdout.
fn generated(exe: &str, args: &[&str]) -> String {
    let out = run(exe, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{exe} {args:?} failed: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(!stdout.trim().is_empty(), "{exe} {args:?} printed nothing");
    stdout
}

/// The long flags `exe --help` lists, without their dashes, but help and version.
fn long_flags(exe: &str) -> Vec<String> {
    let help = generated(exe, &["--help"]);
    let flags: Vec<String> = help
        .lines()
        // An option's line starts with it ("-x, --flag" or "--flag"); help text that
        // mentions a flag in passing is not one.
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split([' ', ',']).find(|w| w.starts_with("--")))
        .map(|flag| flag.trim_start_matches('-').to_owned())
        .filter(|flag| flag != "help" && flag != "version")
        .collect();
    assert!(flags.len() >= 3, "{exe} --help lists too few flags: {help}");
    flags
}

/// Whether `program` can be run here.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` with `stdin` written to its standard input; returns what it printed.
fn piped(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .unwrap_or_else(|e| panic!("write to {command:?}: {e}"));
    child.wait_with_output().expect("wait for the child")
}

/// Runs `bash -c script`, with `stdin` on its standard input; returns its stdout, asserting
/// it exited 0.
fn bash(script: &str, stdin: &str) -> String {
    let mut command = Command::new("bash");
    command.args(["-c", script]);
    let out = piped(command, stdin);
    assert!(
        out.status.success(),
        "bash -c {script:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn every_binary_prints_a_completion_script_for_every_shell_naming_all_its_flags() {
    for (name, exe) in BINARIES {
        let flags = long_flags(exe);
        for shell in SHELLS {
            let script = generated(exe, &["--generate-completions", shell]);
            assert!(
                script.contains(name),
                "{name} {shell}: no {name} in the script"
            );
            for flag in &flags {
                assert!(
                    script.contains(flag.as_str()),
                    "{name} {shell}: no {flag} in the script"
                );
            }
        }
    }
}

#[test]
fn bash_scripts_parse_and_complete_flags_and_subcommands() {
    for (_, exe) in BINARIES {
        let script = generated(exe, &["--generate-completions=bash"]);
        bash("bash -n /dev/stdin", &script);
    }
    // Sourced into bash, the script registers a function for the binary's name; called as
    // bash calls it on a TAB, it offers the flags and subcommands that start with the word.
    let complete = |name: &str, exe: &str, words: &[&str]| -> Vec<String> {
        let script = generated(exe, &["--generate-completions", "bash"]);
        let words = words.join(" ");
        let driver = format!(
            "source /dev/stdin
             fn=$(complete -p {name} | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')
             COMP_WORDS=({name} {words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
             \"$fn\" {name} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        bash(&driver, &script).lines().map(str::to_owned).collect()
    };
    let (kv_server, kv_cli) = (BINARIES[0], BINARIES[2]);
    assert_eq!(
        complete(kv_server.0, kv_server.1, &["--max-c"]),
        ["--max-connections"]
    );
    assert_eq!(
        complete(kv_server.0, kv_server.1, &["--conf"]),
        ["--config"]
    );
    assert_eq!(complete(kv_cli.0, kv_cli.1, &["g"]), ["get"]);
    assert_eq!(complete(kv_cli.0, kv_cli.1, &["--tok"]), ["--token-file"]);
}

/// `roff` rendered as text by `man -l -`, else `groff -man -Tutf8`; `None` when neither is
/// installed.
fn render(roff: &str) -> Option<String> {
    let renderer: &[&str] = if installed("man") {
        &["man", "-l", "-"]
    } else if installed("groff") {
        &["groff", "-man", "-Tutf8", "-P-cbou"]
    } else {
        return None;
    };
    let mut command = Command::new(renderer[0]);
    command
        .args(&renderer[1..])
        // No pager, no terminal formatting, one width whatever the terminal.
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .env_remove("MAN_KEEP_FORMATTING");
    let out = piped(command, roff);
    assert!(
        out.status.success(),
        "{renderer:?} failed: {}",
        text(&out.stderr)
    );
    Some(text(&out.stdout))
}

#[test]
fn every_binary_prints_a_man_page_with_its_name_and_flags() {
    for (name, exe) in BINARIES {
        let flags = long_flags(exe);
        let roff = generated(exe, &["--generate-man"]);
        let title = format!(".TH {} 1 ", name.to_uppercase());
        assert!(roff.contains(&title), "{name}: no {title:?} in {roff}");
        // roff writes a dash as \-.
        let roff_flag = |flag: &str| format!("\\-\\-{}", flag.replace('-', "\\-"));
        for flag in flags.iter().map(String::as_str).chain(["generate-man"]) {
            assert!(
                roff.contains(&roff_flag(flag)),
                "{name}: no --{flag} in the page"
            );
        }
        let Some(page) = render(&roff) else {
            eprintln!("neither man nor groff is installed: {name}'s page checked as roff only");
            continue;
        };
        assert!(page.contains(&name.to_uppercase()), "{name}: {page}");
        assert!(page.contains("OPTIONS"), "{name}: {page}");
        for flag in &flags {
            assert!(
                page.contains(&format!("--{flag}")),
                "{name}: no --{flag} in the rendered page: {page}"
            );
        }
    }
}

#[test]
fn kv_cli_has_a_man_page_per_subcommand_listed_on_its_top_page() {
    let exe = env!("CARGO_BIN_EXE_kv-cli");
    let top = generated(exe, &["--generate-man"]);
    assert!(top.contains(".SH SUBCOMMANDS"), "{top}");
    for sub in ["set", "get", "del", "ping", "stats"] {
        assert!(
            top.contains(&format!("kv\\-cli\\-{sub}(1)")),
            "no kv-cli-{sub}(1) on the top page: {top}"
        );
        let page = generated(exe, &["--generate-man", sub]);
        let title = format!(".TH KV-CLI-{} 1 ", sub.to_uppercase());
        assert!(page.contains(&title), "no {title:?} in {page}");
    }
    let get = generated(exe, &["--generate-man", "get"]);
    assert!(get.contains("KEY"), "kv-cli get's page names no KEY: {get}");
    if let Some(rendered) = render(&get) {
        assert!(rendered.contains("kv-cli get"), "{rendered}");
    }
}

#[test]
fn bad_requests_exit_2_and_say_what_is_there() {
    let kv_cli = env!("CARGO_BIN_EXE_kv-cli");
    let kv_server = env!("CARGO_BIN_EXE_kv-server");
    for (exe, args, says) in [
        (kv_server, &["--generate-completions", "tcsh"][..], "bash"),
        (kv_server, &["--generate-completions"][..], "SHELL"),
        (kv_cli, &["--generate-man", "put"][..], "set, get, del"),
        (kv_server, &["--generate-man", "get"][..], "no subcommands"),
        (
            kv_server,
            &["--generate-man", "--addr", "x:1"][..],
            "--addr",
        ),
    ] {
        let out = run(exe, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            text(&out.stdout)
        );
        assert!(stderr.contains(says), "{args:?}: no {says:?} in {stderr}");
    }
}
