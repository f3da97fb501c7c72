//! CNI error results: what the runtime reads on stdout when a command fails.

use serde::Serialize;

/// The spec's well-known codes (SPEC.md, "Error"), and this plugin's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// switchd is not running, or did not answer in time.
    pub const TRY_AGAIN: u32 = 11;
    /// switchd refused the request; `details` has its reason.
    pub const SWITCHD: u32 = 100;
    /// Addresses or routes could not be set inside the container's namespace.
    pub const NETNS: u32 = 101;
    /// CHECK found the attachment different from what ADD made.
    pub const CHECK: u32 = 102;
    /// The IPAM plugin could not be run, or failed without an error result.
    pub const IPAM: u32 = 103;
}

/// An error result. `cni_version` is filled in by `main` from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the spec asks for, in the request's version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.msg, self.details)
    }
}

pub type CniResult<T> = Result<T, CniError>;
