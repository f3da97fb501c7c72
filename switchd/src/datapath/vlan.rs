//! A port's VLAN policy as the datapath applies it, built from its checked
//! [`VlanConfig`]: which VLAN a received frame is in, which VLANs the port
//! carries, and which leave it tagged. The rules are Open vSwitch's
//! (ovs-vswitchd.conf.db(5), "VLAN Configuration"):
//!
//! - access: untagged (or priority-tagged, VLAN id 0) frames are in VLAN `tag`;
//!   any other tagged frame is dropped; frames leave untagged.
//! - trunk: a frame is in the VLAN of its tag, or VLAN 0 untagged, and is dropped
//!   if `trunks` (empty: all) does not list it; frames of VLANs other than 0
//!   leave tagged.
//! - native-tagged / native-untagged: a trunk whose untagged frames are in VLAN
//!   `tag`, which it always carries (and then not VLAN 0); frames of the native
//!   VLAN leave tagged / untagged.
//!
//! Frames with VLAN id 0 never leave tagged (Open vSwitch's `priority-tags`
//! default). A port without VLAN settings is a trunk of every VLAN.

use std::sync::Arc;
use switchd_proto::{VlanConfig, VlanMode};

const VLANS: usize = 4096;

/// A set of VLAN ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanSet([u64; VLANS / 64]);

impl VlanSet {
    fn contains(&self, vlan: u16) -> bool {
        let v = usize::from(vlan) % VLANS;
        self.0[v / 64] & (1 << (v % 64)) != 0
    }
}

impl FromIterator<u16> for VlanSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = VlanSet([0; VLANS / 64]);
        for v in iter {
            let v = usize::from(v) % VLANS;
            set.0[v / 64] |= 1 << (v % 64);
        }
        set
    }
}

/// Why a received frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A tagged frame on an access port.
    Tagged,
    /// A VLAN the port does not carry.
    Untrunked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortVlan {
    mode: VlanMode,
    /// The access or native VLAN; 0 for a trunk.
    tag: u16,
    /// The VLANs a trunk or native port carries besides its native VLAN;
    /// `None`: every VLAN. Shared: 512 bytes per port per thread view otherwise.
    trunks: Option<Arc<VlanSet>>,
}

impl Default for PortVlan {
    fn default() -> Self {
        PortVlan::TRUNK_ALL
    }
}

impl PortVlan {
    /// The policy of columns that must pass `VlanConfig::check`, for tests.
    #[cfg(test)]
    pub(crate) fn checked(tag: Option<u16>, trunks: &[u16], vlan_mode: Option<VlanMode>) -> Self {
        let config = VlanConfig {
            tag,
            trunks: trunks.to_vec(),
            vlan_mode,
        };
        PortVlan::new(&config.check().expect("valid VLAN columns"))
    }

    /// A port without VLAN settings.
    pub const TRUNK_ALL: PortVlan = PortVlan {
        mode: VlanMode::Trunk,
        tag: 0,
        trunks: None,
    };

    /// A port that carries no VLAN (a mirror's output port): 4095 is reserved,
    /// no frame is ever classified into it.
    pub const NONE: PortVlan = PortVlan {
        mode: VlanMode::Access,
        tag: 4095,
        trunks: None,
    };

    /// The policy of a port with `config`, which the control plane has checked.
    pub fn new(config: &VlanConfig) -> Self {
        let mode = config.mode();
        PortVlan {
            mode,
            tag: config.tag.unwrap_or(0),
            trunks: (mode != VlanMode::Access && !config.trunks.is_empty())
                .then(|| Arc::new(config.trunks.iter().copied().collect())),
        }
    }

    pub fn mode(&self) -> VlanMode {
        self.mode
    }

    /// The access or native VLAN (0 for a trunk).
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The VLAN of a frame received with a tag of VLAN id `vid` (`None`:
    /// untagged; a priority tag, id 0, counts as none).
    #[inline]
    pub fn classify(&self, vid: Option<u16>) -> Result<u16, Refused> {
        let vid = vid.filter(|&v| v != 0);
        // 4095 is reserved (802.1Q): no port carries it, whatever its trunks.
        if vid == Some(4095) && self.mode != VlanMode::Access {
            return Err(Refused::Untrunked);
        }
        let vlan = match (self.mode, vid) {
            (VlanMode::Access, Some(_)) => return Err(Refused::Tagged),
            (VlanMode::Access, None) => return Ok(self.tag),
            (VlanMode::Trunk, vid) => vid.unwrap_or(0),
            (VlanMode::NativeTagged | VlanMode::NativeUntagged, None) => return Ok(self.tag),
            (VlanMode::NativeTagged | VlanMode::NativeUntagged, Some(v)) => v,
        };
        if self.carries(vlan) {
            Ok(vlan)
        } else {
            Err(Refused::Untrunked)
        }
    }

    /// Whether the port carries every VLAN (no settings): floods need no check.
    #[inline]
    pub fn carries_all(&self) -> bool {
        self.mode == VlanMode::Trunk && self.trunks.is_none()
    }

    /// Whether frames of `vlan` may enter and leave through the port.
    #[inline]
    pub fn carries(&self, vlan: u16) -> bool {
        let trunked = || self.trunks.as_ref().is_none_or(|t| t.contains(vlan));
        match self.mode {
            VlanMode::Access => vlan == self.tag,
            VlanMode::Trunk => trunked(),
            // The native VLAN always; VLAN 0 only as the native one.
            VlanMode::NativeTagged | VlanMode::NativeUntagged => {
                vlan == self.tag || (vlan != 0 && trunked())
            }
        }
    }

    /// Whether a frame of `vlan` (which the port carries) leaves with a tag.
    #[inline]
    pub fn tags(&self, vlan: u16) -> bool {
        match self.mode {
            VlanMode::Access => false,
            VlanMode::Trunk | VlanMode::NativeTagged => vlan != 0,
            VlanMode::NativeUntagged => vlan != 0 && vlan != self.tag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(tag: Option<u16>, trunks: &[u16], mode: Option<VlanMode>) -> PortVlan {
        PortVlan::checked(tag, trunks, mode)
    }

    #[test]
    fn a_port_without_settings_trunks_everything() {
        let p = PortVlan::default();
        assert_eq!(p.classify(None), Ok(0));
        assert_eq!(p.classify(Some(0)), Ok(0), "priority tag");
        assert_eq!(p.classify(Some(4094)), Ok(4094));
        assert_eq!(p.classify(Some(4095)), Err(Refused::Untrunked), "reserved");
        assert!(!p.tags(0) && p.tags(7));
    }

    #[test]
    fn access_ports_take_untagged_frames_only() {
        let p = port(Some(10), &[], None);
        assert_eq!(p.classify(None), Ok(10));
        assert_eq!(p.classify(Some(0)), Ok(10), "priority tag");
        assert_eq!(p.classify(Some(10)), Err(Refused::Tagged), "even its own");
        assert_eq!(p.classify(Some(20)), Err(Refused::Tagged));
        assert!(p.carries(10) && !p.carries(0) && !p.carries(20));
        assert!(!p.tags(10));
    }

    #[test]
    fn trunks_carry_their_list() {
        let p = port(None, &[10, 20], None);
        assert_eq!(p.classify(Some(10)), Ok(10));
        assert_eq!(p.classify(Some(30)), Err(Refused::Untrunked));
        assert_eq!(
            p.classify(None),
            Err(Refused::Untrunked),
            "VLAN 0 not listed"
        );
        assert!(p.tags(10));
        let with_0 = port(None, &[0, 10], None);
        assert_eq!(with_0.classify(None), Ok(0));
        assert!(!with_0.tags(0));
    }

    #[test]
    fn native_ports_put_untagged_frames_in_their_tag() {
        for mode in [VlanMode::NativeTagged, VlanMode::NativeUntagged] {
            let p = port(Some(10), &[20], Some(mode));
            assert_eq!(p.classify(None), Ok(10));
            assert_eq!(p.classify(Some(10)), Ok(10));
            assert_eq!(p.classify(Some(20)), Ok(20));
            assert_eq!(p.classify(Some(30)), Err(Refused::Untrunked));
            assert!(p.carries(10) && p.carries(20) && !p.carries(0));
            assert!(p.tags(20));
            assert_eq!(p.tags(10), mode == VlanMode::NativeTagged);
        }
        // All VLANs but 0 when trunks is empty.
        let p = port(Some(10), &[], Some(VlanMode::NativeUntagged));
        assert!(p.carries(4094) && !p.carries(0));
    }
}
