//! The examples (examples/*.rs) as programs to run: built once per test binary with `cargo
//! build --examples` into the test's own target directory and profile, with its features.
//! `cargo test` builds them only as tests when they are (`testing`), and `cargo test --test
//! NAME` not at all. Cargo holds no lock on the build directory while tests run, and the
//! library is built already, so this takes a few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::Process;

/// How long building the examples may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// The features this test was built with, for the examples' build (the same set, "default"
/// included, so that the library is not built again).
const FEATURES: &[(&str, bool)] = &[
    ("default", cfg!(feature = "default")),
    ("serde", cfg!(feature = "serde")),
    ("signal", cfg!(feature = "signal")),
    ("kv", cfg!(feature = "kv")),
    ("echo", cfg!(feature = "echo")),
    ("cli", cfg!(feature = "cli")),
    ("tokio", cfg!(feature = "tokio")),
];

/// The variables cargo sets for a test besides CARGO_PKG_*, which a build in a shell lacks.
const SET_FOR_TESTS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// target/<profile>: this test runs from its `deps` folder.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .to_owned()
}

/// Builds every example once (the first call; the others wait for it); panics with cargo's
/// output when the build fails.
fn build_examples() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let profile_dir = profile_dir();
        let features: Vec<&str> = FEATURES
            .iter()
            .filter_map(|&(name, on)| on.then_some(name))
            .collect();
        let mut cargo = Command::new(env!("CARGO"));
        // Not the variables cargo sets for a test: build scripts that watch one (ring's
        // watches CARGO_MANIFEST_DIR) would run again, and everything after them rebuild.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_") || SET_FOR_TESTS.contains(&&*name) {
                cargo.env_remove(&*name);
            }
        }
        cargo
            .arg("build")
            .arg("--examples")
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target/<profile> has a parent"))
            .args(["--no-default-features", "--features", &features.join(",")]);
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(profile) => {
                cargo.args(["--profile", profile]);
            }
            None => return Err(format!("no profile in {}", profile_dir.display())),
        }
        let mut build = Process::spawn(cargo);
        match build.wait_within(BUILD_LIMIT) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{status}:\n{}", build.stderr())),
            None => Err(format!(
                "not done within {BUILD_LIMIT:?}:\n{}",
                build.stderr()
            )),
        }
    });
    if let Err(e) = built {
        panic!("cargo build --examples: {e}");
    }
}

/// The command running example `name`, built.
pub fn example(name: &str) -> Command {
    build_examples();
    let path = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "no example {}", path.display());
    Command::new(path)
}
