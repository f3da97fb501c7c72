//! Delegation to the IPAM plugin (SPEC.md section 4): found in CNI_PATH, run with
//! this plugin's environment and the whole configuration on stdin, its stderr
//! passed through.

use crate::error::{code, CniError, CniResult};
use crate::result::Result as CniOutput;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first executable file named `plugin` in CNI_PATH's directories.
fn find(plugin: &str, path: &[PathBuf]) -> CniResult<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if path.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variable CNI_PATH",
            format!("CNI_PATH: not set, so the IPAM plugin {plugin} cannot be found"),
        ));
    }
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            CniError::new(
                code::IPAM,
                "IPAM plugin not found",
                format!(
                    "no executable {plugin} in CNI_PATH ({})",
                    std::env::join_paths(path)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            )
        })
}

/// Runs `plugin` with `CNI_COMMAND=command` (the rest of the environment as this
/// plugin got it) and `config` on stdin; returns its stdout.
fn run(plugin: &str, command: &str, path: &[PathBuf], config: &[u8]) -> CniResult<Vec<u8>> {
    let exe = find(plugin, path)?;
    let failed = |e: std::io::Error| {
        CniError::new(
            code::IPAM,
            format!("IPAM plugin {plugin} failed"),
            format!("running {}: {e}", exe.display()),
        )
    };
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(failed)?;
    // A plugin that exits without reading its stdin breaks the pipe: its exit
    // status and stdout say why, so a failed write is not the error to report.
    let _ = child.stdin.take().expect("piped").write_all(config);
    let out = child.wait_with_output().map_err(failed)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(plugin_error(plugin, &exe, &out.stdout, out.status))
}

/// The delegated plugin's own error result, passed on with its code (a runtime
/// reacts to 11 the same whoever says it) and words, or one of ours if it gave
/// none.
fn plugin_error(
    plugin: &str,
    exe: &Path,
    stdout: &[u8],
    status: std::process::ExitStatus,
) -> CniError {
    #[derive(serde::Deserialize)]
    struct Error {
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<Error>(stdout) {
        Ok(e) => CniError::new(
            e.code,
            format!("IPAM plugin {plugin} failed"),
            if e.details.is_empty() {
                e.msg
            } else {
                format!("{}: {}", e.msg, e.details)
            },
        ),
        Err(_) => CniError::new(
            code::IPAM,
            format!("IPAM plugin {plugin} failed"),
            format!(
                "{} exited with {status}: {}",
                exe.display(),
                String::from_utf8_lossy(stdout).trim()
            ),
        ),
    }
}

/// ADD: the addresses, routes and DNS the plugin allocated.
pub fn add(plugin: &str, path: &[PathBuf], config: &[u8]) -> CniResult<CniOutput> {
    let stdout = run(plugin, "ADD", path, config)?;
    serde_json::from_slice(&stdout).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("cannot decode the result of IPAM plugin {plugin}"),
            e.to_string(),
        )
    })
}

pub fn del(plugin: &str, path: &[PathBuf], config: &[u8]) -> CniResult<()> {
    run(plugin, "DEL", path, config).map(drop)
}

pub fn check(plugin: &str, path: &[PathBuf], config: &[u8]) -> CniResult<()> {
    run(plugin, "CHECK", path, config).map(drop)
}
