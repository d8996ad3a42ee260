//! The connect guard: steps can neither open a TCP connection to
//! runbookd's own listening port, on any address (IPv4, IPv6, v4-mapped,
//! TCP Fast Open included), nor bind that port on another address (a step
//! listening on `[::1]:9095` beside runbookd's `127.0.0.1:9095` would get
//! what a browser or Alertmanager sends to `localhost`: session cookies,
//! credentials). A step is a program on runbookd's host: this is the layer
//! below the credentials every request needs anyway.
//!
//! It is a cgroup-BPF hook (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, attached for
//! `connect4`, `connect6`, `bind4` and `bind6`) on the cgroup v2 directory
//! that holds every step's cgroup. The kernel runs it on each `connect` and
//! `bind` of a socket made inside, whatever the step's user, and refuses
//! (`EPERM`) a guarded port. It costs nothing per step (attached once) and a
//! few instructions per call. It needs root (to load BPF) and a writable
//! cgroup v2 hierarchy; where either is missing every step's record lists
//! `connect-guard` as unavailable. A Landlock TCP rule cannot express
//! "every port but this one" cheaply: allowing the other 65,535 ports one
//! rule each made every step's `landlock_restrict_self` copy them, 40 ms a
//! step (docs/sandbox.md).
//!
//! Steps cannot remove it: seccomp denies `bpf`, Landlock denies writing
//! cgroup files, and steps do not run as root.
#![allow(unsafe_code)] // the bpf(2) system call: raw, reasons inline

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_BIND: u32 = 8;
const BPF_CGROUP_INET6_BIND: u32 = 9;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// `offsetof(struct bpf_sock_addr, user_port)`: the port in network byte
/// order, in the low 16 bits of a 32-bit field.
const USER_PORT: i16 = 24;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, as far as it is used.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The program: `return user_port in ports ? 0 (refuse) : 1 (allow)`.
fn program(ports: &[u16]) -> Vec<Insn> {
    const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
    const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    let n = ports.len();
    let mut p = vec![Insn::new(LDX_W, 2, 1, USER_PORT, 0)];
    for (i, port) in ports.iter().enumerate() {
        // From instruction i + 1 to the refusal at n + 3.
        let off = i16::try_from(n - i + 1).unwrap_or(i16::MAX);
        p.push(Insn::new(JEQ_K, 2, 0, off, i32::from(port.to_be())));
    }
    p.extend([
        Insn::new(MOV_K, 0, 0, 0, 1),
        Insn::new(EXIT, 0, 0, 0, 0),
        Insn::new(MOV_K, 0, 0, 0, 0),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]);
    p
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a correctly laid out, zero-padded `union bpf_attr`
    // prefix that lives for the call; the kernel reads at most its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The guard, attached to a cgroup: it stays attached for as long as the
/// cgroup exists (runbookd removes its cgroup directory at exit).
#[derive(Debug)]
pub struct ConnectGuard {
    pub ports: Vec<u16>,
    _programs: Vec<OwnedFd>,
}

impl ConnectGuard {
    /// Loads the program for `ports` and attaches it to the cgroup v2
    /// directory `cgroup` for IPv4 and IPv6 connects and binds.
    ///
    /// # Errors
    /// When BPF or the cgroup refuses (not root, no cgroup BPF in the
    /// kernel, not a cgroup v2 directory).
    pub fn attach(cgroup: &Path, ports: &[u16]) -> io::Result<ConnectGuard> {
        let dir = CString::new(cgroup.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open(2) of a NUL-terminated path; the result is owned below.
        let fd = unsafe {
            libc::open(
                dir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let cgroup_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let insns = program(ports);
        let license = b"GPL\0";
        let mut programs = Vec::new();
        for attach_type in [
            BPF_CGROUP_INET4_CONNECT,
            BPF_CGROUP_INET6_CONNECT,
            BPF_CGROUP_INET4_BIND,
            BPF_CGROUP_INET6_BIND,
        ] {
            let mut load = LoadAttr {
                prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                expected_attach_type: attach_type,
                ..LoadAttr::default()
            };
            load.prog_name[..15].copy_from_slice(b"runbookd_guard\0");
            let prog = i32::try_from(bpf(BPF_PROG_LOAD, &mut load)?)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            // SAFETY: BPF_PROG_LOAD returned a new descriptor we now own.
            let prog = unsafe { OwnedFd::from_raw_fd(prog) };
            let mut attach = AttachAttr {
                target_fd: u32::try_from(cgroup_fd.as_raw_fd()).unwrap_or(u32::MAX),
                attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
                attach_type,
                attach_flags: BPF_F_ALLOW_MULTI,
            };
            bpf(BPF_PROG_ATTACH, &mut attach)?;
            programs.push(prog);
        }
        Ok(ConnectGuard {
            ports: ports.to_vec(),
            _programs: programs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_jumps_to_the_refusal() {
        let p = program(&[9095, 80]);
        assert_eq!(p.len(), 1 + 2 + 4);
        // Instruction 1 jumps 3 ahead (to 5), instruction 2 jumps 2 ahead (to 5).
        assert_eq!((p[1].off, p[2].off), (3, 2));
        assert_eq!(p[1].imm, i32::from(9095u16.to_be()));
        assert_eq!((p[5].code, p[5].imm), (0xb7, 0), "the refusal returns 0");
        assert_eq!((p[3].code, p[3].imm), (0xb7, 1), "the rest is allowed");
    }
}
