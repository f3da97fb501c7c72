//! Integration tests: real namespaces, veth pairs and traffic through a real switchd,
//! driven only through switchctl. They need root (CI runs as root).

/// Forwarding tests (forwarding.rs, vlan.rs) run on both datapaths, each as its own test:
/// `tc::NAME` with the defaults (the kernel fast path forwards known unicast
/// between learned addresses) and `userspace::NAME` with `--offload none` (the
/// userspace datapath forwards every frame); and once more with the datapath's
/// documented alternatives, `threads_2_no_ring_no_poll::NAME`: two threads, no
/// receive rings (`--rx-ring-frames 0`), no polling (`--spin-us 0`).
macro_rules! on_both_datapaths {
    ($($name:ident),* $(,)?) => {
        mod tc {
            $( #[test] fn $name() { super::$name(&[]) } )*
        }
        mod userspace {
            $( #[test] fn $name() { super::$name(&["--offload", "none"]) } )*
        }
        mod threads_2_no_ring_no_poll {
            $( #[test] fn $name() {
                super::$name(&["--datapath-threads", "2", "--rx-ring-frames", "0", "--spin-us", "0"])
            } )*
        }
    };
}

mod capture;
mod cli;
mod cni;
mod forwarding;
mod lifecycle;
mod metrics;
mod mininet;
mod mirror;
mod monitor;
mod namespaces;
mod offload;
mod ovs_vsctl;
mod snooping;
mod trace;
mod tunnel;
mod vlan;
use switchd_testkit as util;
