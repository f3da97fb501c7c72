//! The egress stage: what a frame needs on its way out of one particular port,
//! between `decide` (which picked the ports) and the send.
//!
//! Today every port sends a frame exactly as it came in, virtio-net header
//! included, so the stage passes each frame through untouched (criterion:
//! `egress_stage`, within noise of `decide` alone). It is the one place for
//! per-egress work, each a field of [`Egress`] and a step of [`stage`]: VLAN tags
//! pushed or popped for the port's mode (and frames of VLANs the port does not
//! carry left out), VXLAN encapsulation for a tunnel port, copies for mirrors and
//! captures, checksums completed in software for a port that cannot take a
//! partial one. Work that rewrites a frame writes into per-thread scratch, as the
//! receive path's tag restore does, never into a frame another port also sends.
//! Like `decide` it does no I/O, so unit tests, criterion and the fuzzer share it.

/// What one port needs done to the frames it sends, set when the port is made.
/// Empty: no port kind or setting changes frames on the way out yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {}

/// The bytes to send for `frame` (virtio-net header first) leaving through a
/// port with `egress`, or `None` if it does not leave through that port.
#[inline]
pub fn stage<'a>(egress: &Egress, frame: &'a [u8]) -> Option<&'a [u8]> {
    // Destructured so that a new field cannot be left out here.
    let Egress {} = egress;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_every_frame_leaves_as_it_came() {
        let frame = [7u8; 70];
        let out = stage(&Egress::default(), &frame).unwrap();
        assert!(std::ptr::eq(out, &frame[..]), "passed through, not copied");
    }
}
