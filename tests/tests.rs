//! Integration tests: real namespaces, veth pairs and traffic through a real switchd,
//! driven only through switchctl. They need root (CI runs as root).

mod cli;
mod forwarding;
mod lifecycle;
mod namespaces;
mod offload;
use switchd_testkit as util;
