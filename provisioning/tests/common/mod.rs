//! Test helpers: run the real `lookout-provision` binary and real system
//! tools. A missing tool fails the test with the package to install; it is
//! never a reason to pass.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `lookout-provision` with `args`.
pub fn provision<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_lookout-provision")).args(args).output().expect("lookout-provision runs")
}

/// Runs `lookout-provision` with `args`, writing `input` to its standard input.
pub fn provision_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout-provision"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lookout-provision runs");
    child.stdin.take().expect("stdin is piped").write_all(input).expect("write to stdin");
    child.wait_with_output().expect("lookout-provision ends")
}

/// Runs `lookout-provision`, which must succeed; returns its stdout.
pub fn provision_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = provision(args);
    assert!(output.status.success(), "lookout-provision failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs `lookout-provision`, which must fail; returns its stderr.
pub fn provision_err<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = provision(args);
    assert!(
        !output.status.success(),
        "lookout-provision should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a system tool from Debian `package`, which must succeed.
pub fn tool(package: &str, program: &str, args: &[&str]) -> Output {
    let output = tool_status(package, program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a system tool from Debian `package`, whatever its exit status.
pub fn tool_status(package: &str, program: &str, args: &[&str]) -> Output {
    let path = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{program} is missing: install the Debian package {package} (bash scripts/test.sh does)")
        });
    Command::new(path)
        .args(args)
        // mtools refuses unaligned test images without this.
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

pub mod image;
