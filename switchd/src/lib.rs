//! switchd: a userspace Ethernet switch for Linux network namespaces.
//!
//! Layers, with dependencies pointing one way:
//! - [`wire`]: zero-copy views over frame bytes; no I/O.
//! - [`sys`]: every libc call (packet sockets, batched I/O, epoll), as safe RAII types.
//! - [`datapath`]: the forwarding threads, ports and MAC tables; never imports tokio.
//! - [`control`]: the tokio control plane: socket server, configuration, netlink;
//!   never touches a packet.
//!
//! [`run`] wires them together; `main.rs` only parses flags and starts tracing.
#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod datapath;
pub mod sys;
pub mod wire;

pub use config::Config;
pub use control::run;
