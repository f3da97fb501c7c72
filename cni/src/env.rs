//! The CNI_* environment variables of a request (SPEC.md, "Parameters").

use crate::error::{code, CniError, CniResult};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// A request's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// `None` when CNI_NETNS is unset or empty (allowed for DEL only).
    pub netns: Option<String>,
    pub ifname: String,
    /// CNI_PATH's directories, where delegated (IPAM) plugins are looked up.
    pub path: Vec<PathBuf>,
    /// CNI_ARGS `MAC=`.
    pub mac: Option<String>,
}

fn invalid(var: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("invalid environment variable {var}"),
        format!("{var}: {why}"),
    )
}

/// Reads the parameters through `var` (`std::env::var` outside of tests).
pub fn parse(var: impl Fn(&str) -> Option<String>) -> CniResult<Env> {
    let command = match var("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(invalid(
                "CNI_COMMAND",
                format!("{other:?} is not ADD, DEL, CHECK or VERSION"),
            ))
        }
        None => return Err(invalid("CNI_COMMAND", "not set")),
    };
    let mut env = Env {
        command,
        container_id: String::new(),
        netns: var("CNI_NETNS").filter(|n| !n.is_empty()),
        ifname: String::new(),
        path: var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect(),
        mac: None,
    };
    if command == Command::Version {
        return Ok(env);
    }
    env.container_id = var("CNI_CONTAINERID").unwrap_or_default();
    check_container_id(&env.container_id).map_err(|why| invalid("CNI_CONTAINERID", why))?;
    env.ifname = var("CNI_IFNAME").unwrap_or_default();
    check_ifname(&env.ifname).map_err(|why| invalid("CNI_IFNAME", why))?;
    match &env.netns {
        None if command != Command::Del => return Err(invalid("CNI_NETNS", "not set")),
        Some(netns) if !netns.starts_with('/') => {
            return Err(invalid(
                "CNI_NETNS",
                format!("{netns:?} is not an absolute path"),
            ))
        }
        _ => {}
    }
    env.mac = cni_args(&var("CNI_ARGS").unwrap_or_default())?.mac;
    Ok(env)
}

/// The CNI_ARGS this plugin reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub mac: Option<String>,
}

/// `K=V;K=V`. Keys other than `MAC` are for other plugins (runtimes send
/// `IgnoreUnknown=1;K8S_POD_NAME=...`), so they are skipped, not refused.
pub fn cni_args(args: &str) -> CniResult<CniArgs> {
    let mut out = CniArgs::default();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid("CNI_ARGS", format!("{pair:?} is not KEY=VALUE")))?;
        if key == "MAC" {
            out.mac = Some(value.to_string());
        }
    }
    Ok(out)
}

/// SPEC.md: not empty, an alphanumeric first, then alphanumerics, `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    match chars.next() {
        None => Err("not set".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            Err(format!("{id:?} does not start with a letter or digit"))
        }
        _ if chars.any(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(c))) => Err(format!(
            "{id:?} has a character other than letters, digits, '_', '.' and '-'"
        )),
        _ => Ok(()),
    }
}

/// Linux's rules for an interface name, as SPEC.md repeats them.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("not set".into())
    } else if name.len() > 15 {
        Err(format!("{name:?} is longer than 15 bytes"))
    } else if name == "." || name == ".." {
        Err(format!("{name:?} is not a valid interface name"))
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Err(format!("{name:?} contains '/', ':', NUL or white space"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_vars(vars: &[(&str, &str)]) -> CniResult<Env> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| vars.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni::/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;MAC=02:00:00:00:00:01;K8S_POD_NAME=a",
        ),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        ADD.iter().copied().filter(|(k, _)| *k != name).collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut vars = without(name);
        vars.push((name, value));
        vars
    }

    #[test]
    fn a_runtime_request_parses() {
        let env = parse_vars(ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.netns.as_deref(), Some("/run/netns/x"));
        assert_eq!(
            env.path,
            vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
        );
        assert_eq!(env.mac.as_deref(), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn each_bad_variable_is_named() {
        for (vars, var) in [
            (without("CNI_COMMAND"), "CNI_COMMAND"),
            (with("CNI_COMMAND", "GC"), "CNI_COMMAND"),
            (without("CNI_CONTAINERID"), "CNI_CONTAINERID"),
            (with("CNI_CONTAINERID", "-x"), "CNI_CONTAINERID"),
            (with("CNI_CONTAINERID", "a b"), "CNI_CONTAINERID"),
            (without("CNI_IFNAME"), "CNI_IFNAME"),
            (with("CNI_IFNAME", "a-name-too-long-0"), "CNI_IFNAME"),
            (with("CNI_IFNAME", "eth:0"), "CNI_IFNAME"),
            (without("CNI_NETNS"), "CNI_NETNS"),
            (with("CNI_NETNS", "relative"), "CNI_NETNS"),
            (with("CNI_ARGS", "MAC"), "CNI_ARGS"),
        ] {
            let e = parse_vars(&vars).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{vars:?}");
            assert!(e.details.starts_with(var), "{var}: {e}");
        }
    }

    #[test]
    fn del_needs_no_namespace_and_version_needs_nothing_else() {
        let mut vars = with("CNI_COMMAND", "DEL");
        vars.retain(|(k, _)| *k != "CNI_NETNS");
        assert_eq!(parse_vars(&vars).unwrap().netns, None);
        let vars = with("CNI_NETNS", "");
        assert_eq!(
            parse_vars(&vars).unwrap_err().code,
            code::INVALID_ENV,
            "ADD with an empty CNI_NETNS"
        );
        assert_eq!(
            parse_vars(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }
}
