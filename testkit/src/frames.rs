//! Raw frames, and packet sockets inside a namespace built from switchd's own
//! `sys` types.

use crate::Netns;
use std::time::{Duration, Instant};
use switchd::sys::{TxFrame, TxOutcome};

/// A raw packet socket on an interface inside a namespace, built from switchd's own
/// `sys` types (virtio-net header, batched I/O, VLAN tags restored from metadata).
pub struct NsSocket {
    sock: switchd::sys::PacketSocket,
    sender: switchd::sys::Sender,
    rx: switchd::sys::RxBatch,
    tx: switchd::sys::TxBatch,
}

const VNET_HDR: usize = 10;

impl Netns {
    pub fn packet_socket(&self, ifname: &str) -> NsSocket {
        let (ns, ifname) = (self.name.clone(), ifname.to_string());
        // A socket belongs to the namespace it was created in: create it on a
        // thread that has joined the namespace, and let the thread end.
        let sock = std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            switchd::sys::enter_netns(&file).expect("setns");
            let index = switchd::sys::ifindex(&ifname).expect("interface in namespace");
            let sock = switchd::sys::PacketSocket::open(index).expect("packet socket");
            (
                sock,
                switchd::sys::Sender::open(false).expect("sending socket"),
            )
        })
        .join()
        .unwrap();
        let (sock, sender) = sock;
        NsSocket {
            sock,
            sender,
            rx: switchd::sys::RxBatch::new(8),
            tx: switchd::sys::TxBatch::new(8),
        }
    }
}

impl NsSocket {
    pub fn send(&mut self, frame: &[u8]) {
        let mut bytes = vec![0u8; VNET_HDR];
        bytes.extend_from_slice(frame);
        let mut sent = [TxOutcome::default()];
        let frame = (0, self.sock.ifindex(), TxFrame::Whole(&bytes[..]));
        self.tx.send(&self.sender, [frame], &mut sent);
        assert_eq!(sent[0].packets, 1, "send failed: {:?}", sent[0].last_error);
    }

    /// Sends every frame, a batch per syscall; returns how many the kernel took.
    pub fn send_all(&mut self, frames: impl Iterator<Item = Vec<u8>>) -> u64 {
        let bufs: Vec<Vec<u8>> = frames
            .map(|f| {
                let mut b = vec![0u8; VNET_HDR];
                b.extend_from_slice(&f);
                b
            })
            .collect();
        let mut sent = [TxOutcome::default()];
        let ifindex = self.sock.ifindex();
        for chunk in bufs.chunks(64) {
            let frames = chunk.iter().map(|b| (0, ifindex, TxFrame::Whole(&b[..])));
            self.tx.send(&self.sender, frames, &mut sent);
        }
        sent[0].packets
    }

    /// Frames received, whole batches at a time, until `done` holds for all
    /// received so far or `timeout`.
    pub fn recv_while(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + timeout;
        while !done(&frames) && Instant::now() < deadline {
            match self.rx.recv(&self.sock) {
                Ok(n) => frames.extend((0..n).map(|i| self.rx.frame(i).bytes[VNET_HDR..].to_vec())),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        frames
    }

    /// Frames received until `stop` returns true for one (returned last) or `timeout`.
    pub fn recv_until(&mut self, timeout: Duration, stop: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.rx.recv(&self.sock) {
                Ok(n) => {
                    for i in 0..n {
                        let frame = self.rx.frame(i).bytes[VNET_HDR..].to_vec();
                        let done = stop(&frame);
                        frames.push(frame);
                        if done {
                            return frames;
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        frames
    }
}

/// The one's-complement sum of RFC 1071 over `chunks` laid end to end (each
/// of even length but the last), folded: what IP, ICMP, IGMP and MLD carry.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame of 60 bytes; `vlan` adds an 802.1Q tag with that TCI.
pub fn frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    // IEEE "local experimental" ethertype: nothing in a namespace reacts to it.
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}
