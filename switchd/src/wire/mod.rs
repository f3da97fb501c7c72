//! Zero-copy views over frame bytes. No I/O, no allocation.
//!
//! Panic contract: a view built with `new_checked` has had its length checked once;
//! after that no accessor panics. Untrusted bytes always go through `new_checked`;
//! `new_unchecked` is for buffers whose length the caller has already proved.

pub mod ethernet;
pub mod mac;
pub mod mcast;
pub mod vlan;
pub mod vnet;

pub use ethernet::{EtherType, EthernetFrame};
pub use mac::MacAddr;
pub use vnet::VnetHeader;

/// The only way parsing fails: the buffer is shorter than the header it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("buffer too short for the header")
    }
}

impl std::error::Error for Truncated {}

type Field = std::ops::Range<usize>;
