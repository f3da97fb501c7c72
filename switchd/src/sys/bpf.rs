//! The few `bpf(2)` commands the in-kernel fast path needs: maps, program load, a
//! TCX link, a socket filter, and an instruction encoder for the programs we
//! generate. No libbpf or aya: the programs are about a hundred instructions,
//! generated per port (see `datapath::offload`), so an ELF loader and a BPF
//! toolchain at build time would cost more than they save.

use super::cvt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BPF_LINK_CREATE: libc::c_long = 28;

pub const MAP_HASH: u32 = 1;
pub const MAP_ARRAY: u32 = 2;
pub const MAP_PROG_ARRAY: u32 = 3;
pub const MAP_PERCPU_ARRAY: u32 = 6;
pub const PROG_SOCKET_FILTER: u32 = 1;
pub const PROG_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `union bpf_attr` is at most a few hundred bytes; the kernel rejects non-zero
/// bytes past the fields a command knows, so every call starts from zeros.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn call(&mut self, cmd: libc::c_long) -> io::Result<i64> {
        // SAFETY: `self` is a zero-padded bpf_attr for `cmd`; every pointer the
        // caller stored in it is valid for the duration of the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        cvt(ret)
    }

    fn call_fd(&mut self, cmd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: on success these commands return a new descriptor that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// A BPF map, closed (and freed once no program uses it) on drop.
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    pub fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<Map> {
        let fd = Attr::new()
            .u32(0, map_type)
            .u32(4, key_size)
            .u32(8, value_size)
            .u32(12, max_entries)
            .call_fd(BPF_MAP_CREATE)?;
        Ok(Map {
            fd,
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    fn elem(&self, key: &[u8], value: u64, flags: u64) -> Attr {
        assert_eq!(key.len(), self.key_size, "map key size");
        let mut attr = Attr::new();
        attr.u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value)
            .u64(24, flags);
        attr
    }

    /// Creates or replaces an entry.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert!(value.len() >= self.value_size, "map value size");
        self.elem(key, value.as_ptr() as u64, 0)
            .call(BPF_MAP_UPDATE_ELEM)?;
        Ok(())
    }

    /// Deletes an entry; false if there was none.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        match self.elem(key, 0, 0).call(BPF_MAP_DELETE_ELEM) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates or replaces `keys.len() / key size` entries (keys and values laid
    /// end to end) in one syscall instead of one per entry (kernel 5.6+; the
    /// fast path needs 6.6 for TCX anyway). An entry the kernel
    /// refuses (a full table) is skipped and the rest still written; the error
    /// returned is the last such refusal.
    pub fn update_batch(&self, keys: &[u8], values: &[u8]) -> io::Result<()> {
        let n = keys.len() / self.key_size;
        assert_eq!(values.len(), n * self.value_size, "map values for keys");
        self.batch(BPF_MAP_UPDATE_BATCH, keys, Some(values))
    }

    /// Deletes entries (keys laid end to end) in one syscall; keys that are
    /// absent are skipped.
    pub fn delete_batch(&self, keys: &[u8]) -> io::Result<()> {
        self.batch(BPF_MAP_DELETE_BATCH, keys, None)
    }

    fn batch(&self, cmd: libc::c_long, keys: &[u8], values: Option<&[u8]>) -> io::Result<()> {
        assert_eq!(keys.len() % self.key_size, 0, "map key size");
        let n = keys.len() / self.key_size;
        let mut done = 0;
        let mut refused = None;
        while done < n {
            let count = (n - done) as u32;
            let mut attr = Attr::new();
            // struct { in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags }
            attr.u64(16, keys[done * self.key_size..].as_ptr() as u64)
                .u64(
                    24,
                    values.map_or(0, |v| v[done * self.value_size..].as_ptr() as u64),
                )
                .u32(32, count)
                .u32(36, self.fd.as_raw_fd() as u32);
            let result = attr.call(cmd);
            // `count` comes back as the number of entries carried out, even on error.
            let carried = u32::from_ne_bytes(attr.0[32..36].try_into().unwrap()) as usize;
            done += carried.min(n - done);
            match result {
                Ok(_) => break,
                // The entry at `done` failed: skip it and go on with the rest.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => done += 1,
                Err(e) if matches!(e.raw_os_error(), Some(libc::E2BIG | libc::ENOMEM)) => {
                    done += 1;
                    refused = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Reads an entry into `value` (the map's value size, times the number of
    /// possible CPUs for a per-CPU map); false if there is none.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        assert!(value.len() >= self.value_size, "map value size");
        match self
            .elem(key, value.as_mut_ptr() as u64, 0)
            .call(BPF_MAP_LOOKUP_ELEM)
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The number of CPUs a per-CPU map holds a value for.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for range in text.trim().split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let parse = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| io::Error::other(format!("bad CPU list {text:?}")))
        };
        n = n.max(parse(hi)? + 1);
        parse(lo)?;
    }
    Ok(n)
}

/// A loaded program, unloaded once closed and detached everywhere.
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Loads `insns`; on a verifier rejection the error carries the verifier's log.
    pub fn load(prog_type: u32, name: &str, insns: &[Insn]) -> io::Result<Program> {
        let license = c"Apache-2.0";
        let mut log = vec![0u8; 64 * 1024];
        let mut pname = [0u8; 16];
        for (d, s) in pname.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        let mut attr = Attr::new();
        attr.u32(0, prog_type)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64);
        attr.0[48..64].copy_from_slice(&pname);
        match attr.call_fd(BPF_PROG_LOAD) {
            Ok(fd) => Ok(Program { fd }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; verifier: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ))
            }
        }
    }

    /// The value that puts this program in a `MAP_PROG_ARRAY`.
    pub fn array_value(&self) -> [u8; 4] {
        (self.fd.as_raw_fd() as u32).to_ne_bytes()
    }

    /// Runs the program on every frame received by `ifindex`, before the kernel's
    /// own handling, for as long as the returned link is open.
    pub fn attach_tcx_ingress(&self, ifindex: u32) -> io::Result<OwnedFd> {
        self.attach_tcx(ifindex, BPF_TCX_INGRESS)
    }

    /// Runs the program on every frame `ifindex` sends through its queueing
    /// layer (not on those a packet socket sends with PACKET_QDISC_BYPASS),
    /// for as long as the returned link is open.
    pub fn attach_tcx_egress(&self, ifindex: u32) -> io::Result<OwnedFd> {
        self.attach_tcx(ifindex, BPF_TCX_EGRESS)
    }

    fn attach_tcx(&self, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
        Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, attach_type)
            .call_fd(BPF_LINK_CREATE)
    }

    /// Filters what `socket` receives: the program's return value is how many bytes
    /// of each frame to keep, 0 to skip it.
    pub fn attach_socket_filter(&self, socket: &impl AsFd) -> io::Result<()> {
        let fd: libc::c_int = self.fd.as_raw_fd();
        // SAFETY: `fd` lives across the call and its size is passed.
        cvt(unsafe {
            libc::setsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }
}

/// One eBPF instruction, as `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept
/// across calls, r10 the read-only frame pointer.
pub type Reg = u8;
pub const R0: Reg = 0;
pub const R1: Reg = 1;
pub const R2: Reg = 2;
pub const R3: Reg = 3;
pub const R4: Reg = 4;
pub const R5: Reg = 5;
pub const R6: Reg = 6;
pub const R7: Reg = 7;
pub const R8: Reg = 8;
pub const R9: Reg = 9;
pub const FP: Reg = 10;

/// Access sizes for loads and stores.
#[derive(Clone, Copy)]
pub enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
    DW = 0x18,
}

/// Helper function ids (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const TAIL_CALL: i32 = 12;
    pub const KTIME_GET_NS: i32 = 5;
    pub const SKB_VLAN_PUSH: i32 = 18;
    pub const SKB_VLAN_POP: i32 = 19;
    pub const SKB_GET_TUNNEL_KEY: i32 = 20;
    pub const SKB_SET_TUNNEL_KEY: i32 = 21;
    pub const REDIRECT: i32 = 23;
    pub const SKB_LOAD_BYTES: i32 = 26;
    pub const SKB_STORE_BYTES: i32 = 9;
    pub const CSUM_DIFF: i32 = 28;
    pub const SKB_ADJUST_ROOM: i32 = 50;
    pub const CSUM_LEVEL: i32 = 135;
}

impl Insn {
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }

    pub const fn mov_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0xb7, dst, 0, 0, imm)
    }

    pub const fn mov(dst: Reg, src: Reg) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0)
    }

    pub const fn add_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0x07, dst, 0, 0, imm)
    }

    pub const fn add(dst: Reg, src: Reg) -> Insn {
        Insn::new(0x0f, dst, src, 0, 0)
    }

    pub const fn sub(dst: Reg, src: Reg) -> Insn {
        Insn::new(0x1f, dst, src, 0, 0)
    }

    pub const fn and_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0x57, dst, 0, 0, imm)
    }

    pub const fn lsh_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0x67, dst, 0, 0, imm)
    }

    pub const fn rsh_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(0x77, dst, 0, 0, imm)
    }

    /// `dst = *(size *)(src + off)`
    pub const fn load(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(0x61 | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`
    pub const fn store(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(0x63 | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`
    pub const fn store_imm(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(0x62 | size as u8, dst, 0, off, imm)
    }

    /// Skips `off` instructions if `dst == imm`.
    pub const fn jeq_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(0x15, dst, 0, off, imm)
    }

    /// Skips `off` instructions if `dst != imm`.
    pub const fn jne_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(0x55, dst, 0, off, imm)
    }

    /// Skips `off` instructions.
    pub const fn ja(off: i16) -> Insn {
        Insn::new(0x05, 0, 0, off, 0)
    }

    /// Skips `off` instructions if `dst < imm` (unsigned).
    pub const fn jlt_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(0xa5, dst, 0, off, imm)
    }

    /// Skips `off` instructions if `dst <= src` (unsigned).
    pub const fn jle(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(0xbd, dst, src, off, 0)
    }

    pub const fn call(helper: i32) -> Insn {
        Insn::new(0x85, 0, 0, 0, helper)
    }

    pub const fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }

    /// `dst = map` (two instructions: a 64-bit immediate the kernel turns into the
    /// map's address).
    /// `dst = map`: the loader refers to a map by its descriptor.
    pub fn load_map(dst: Reg, map: &Map) -> [Insn; 2] {
        Insn::load_map_fd(dst, map.fd.as_raw_fd())
    }

    const fn load_map_fd(dst: Reg, map_fd: RawFd) -> [Insn; 2] {
        const BPF_PSEUDO_MAP_FD: Reg = 1;
        [
            Insn::new(0x18, dst, BPF_PSEUDO_MAP_FD, 0, map_fd),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }

    #[cfg(test)]
    pub fn offset(&self) -> i16 {
        self.off
    }

    pub fn set_offset(&mut self, off: i16) {
        self.off = off;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_expects() {
        // Checked against the kernel's BPF_* macros (include/linux/filter.h).
        let raw = |i: Insn| {
            let mut b = [0u8; 8];
            b[0] = i.code;
            b[1] = i.regs;
            b[2..4].copy_from_slice(&i.off.to_le_bytes());
            b[4..8].copy_from_slice(&i.imm.to_le_bytes());
            b
        };
        // BPF_MOV64_IMM(BPF_REG_0, -1)
        assert_eq!(
            raw(Insn::mov_imm(R0, -1)),
            [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // BPF_LDX_MEM(BPF_W, BPF_REG_2, BPF_REG_6, 20)
        assert_eq!(
            raw(Insn::load(Size::W, R2, R6, 20)),
            [0x61, 0x62, 20, 0, 0, 0, 0, 0]
        );
        // BPF_STX_MEM(BPF_DW, BPF_REG_7, BPF_REG_0, 8)
        assert_eq!(
            raw(Insn::store(Size::DW, R7, 8, R0)),
            [0x7b, 0x07, 8, 0, 0, 0, 0, 0]
        );
        // BPF_ST_MEM(BPF_H, BPF_REG_10, -2, 7)
        assert_eq!(
            raw(Insn::store_imm(Size::H, FP, -2, 7)),
            [0x6a, 0x0a, 0xfe, 0xff, 7, 0, 0, 0]
        );
        // BPF_JMP_IMM(BPF_JNE, BPF_REG_2, 0, 3)
        assert_eq!(raw(Insn::jne_imm(R2, 0, 3)), [0x55, 0x02, 3, 0, 0, 0, 0, 0]);
        // BPF_LD_MAP_FD(BPF_REG_1, 5)
        assert_eq!(
            raw(Insn::load_map_fd(R1, 5)[0]),
            [0x18, 0x11, 0, 0, 5, 0, 0, 0]
        );
    }

    #[test]
    fn possible_cpus_covers_the_online_ones() {
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(possible_cpus().unwrap() >= online);
    }
}
