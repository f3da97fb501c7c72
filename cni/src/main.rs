//! `switchd-cni`: a CNI plugin (spec 1.0.0; 0.4.0 and 0.3.x too) that attaches a
//! container's network namespace to a switchd bridge.
//!
//! A runtime runs it with CNI_* variables and the network configuration on
//! stdin. ADD asks switchd (its JSON-RPC socket) for a veth into the namespace
//! and a port on the bridge, one transaction; delegates addresses to the IPAM
//! plugin; applies them inside the namespace; prints the result. DEL finds the
//! port by the container id and interface name it was tagged with, so it works
//! after the namespace is gone. docs/CNI.md has the user's side.
//!
//! - [`env`]: the CNI_* variables;
//! - [`config`]: the network configuration and the spec versions;
//! - [`result`]: results in each version's shape, chained after `prevResult`;
//! - [`switchd`]: the requests to switchd;
//! - [`ipam`]: running the IPAM plugin;
//! - [`netns`]: addresses and routes inside the namespace;
//! - [`cmd`]: ADD, DEL, CHECK, VERSION.

mod cmd;
mod config;
mod env;
mod error;
mod ipam;
mod netns;
mod result;
mod switchd;

use error::{code, CniError};
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => cmd::run(&stdin, |k| std::env::var(k).ok()),
        Err(e) => Err(CniError::new(
            code::IO,
            "cannot read the network configuration",
            e.to_string(),
        )),
    };
    match outcome {
        Ok(Some(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            // The runtime reads the error from stdout (SPEC.md "Error").
            println!("{}", e.to_json(&config::reply_version(&stdin)));
            ExitCode::from(1)
        }
    }
}
