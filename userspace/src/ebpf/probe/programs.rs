//! The probe's programs: a minimal assembler and the small programs that
//! use one feature each, or the combinations the real programs rely on.

use std::os::fd::RawFd;

use super::sys::*;

/// A minimal assembler for the probe programs.
pub(super) mod asm {
    use super::Insn;

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R10: u8 = 10;

    pub const ATOMIC_ADD: i32 = 0x00;
    pub const ATOMIC_OR: i32 = 0x40;
    pub const ATOMIC_AND: i32 = 0x50;
    pub const FETCH: i32 = 0x01;

    pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0xf),
            off,
            imm,
        }
    }
    pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
    }
    pub fn mov64_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
    }
    pub fn add64_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
    }
    pub fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
    }
    pub fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
    }
    /// `dst = map` (two instruction slots, BPF_PSEUDO_MAP_FD).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)] // BPF_LD | BPF_IMM | BPF_DW
    }
    /// `*(u32 *)(dst + off) = imm`
    pub fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x62, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_W
    }
    /// `*(u64 *)(dst + off) = imm`
    pub fn st_dw(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x7a, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_DW
    }
    /// `*(u32 *)(dst + off) = src`
    pub fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x63, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_W
    }
    /// `*(u64 *)(dst + off) = src`
    pub fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x7b, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_DW
    }
    /// `dst = *(u64 *)(src + off)`
    pub fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x79, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_DW
    }
    /// `dst = *(u32 *)(src + off)`
    pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
    }
    /// `if dst == imm goto pc + off` (64-bit compare)
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x15, dst, 0, off, imm) // BPF_JMP | BPF_JEQ | BPF_K
    }
    /// `if (u32)dst == imm goto pc + off`
    pub fn jeq32_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x16, dst, 0, off, imm) // BPF_JMP32 | BPF_JEQ | BPF_K
    }
    /// 32-bit atomic `op` of `src` into `*(u32 *)(dst + off)`.
    pub fn atomic_w(dst: u8, src: u8, off: i16, op: i32) -> Insn {
        insn(0xc3, dst, src, off, op) // BPF_STX | BPF_ATOMIC | BPF_W
    }
    /// 64-bit atomic `op` of `src` into `*(u64 *)(dst + off)`.
    pub fn atomic_dw(dst: u8, src: u8, off: i16, op: i32) -> Insn {
        insn(0xdb, dst, src, off, op) // BPF_STX | BPF_ATOMIC | BPF_DW
    }
}

/// `r0 = ret; exit`
pub(super) fn trivial(ret: i32) -> Vec<Insn> {
    vec![asm::mov64_imm(asm::R0, ret), asm::exit()]
}

/// `*(u32 *)(r10 - 4) = 0; r0 = lookup(map, r10 - 4)`, then `body` on a non-null r0.
pub(super) fn with_array_value(map_fd: RawFd, body: &[Insn]) -> Vec<Insn> {
    use asm::*;
    let mut p = Vec::new();
    p.push(st_w(R10, -4, 0));
    p.extend(ld_map_fd(R1, map_fd));
    p.push(mov64_reg(R2, R10));
    p.push(add64_imm(R2, -4));
    p.push(call(FN_MAP_LOOKUP_ELEM));
    p.push(jeq_imm(R0, 0, body.len() as i16));
    p.extend_from_slice(body);
    p.push(mov64_imm(R0, 0));
    p.push(exit());
    p
}

pub(super) fn atomic_prog(map_fd: RawFd, dw: bool, op: i32, off: i16) -> Vec<Insn> {
    use asm::*;
    let a = if dw {
        atomic_dw(R0, R1, off, op)
    } else {
        atomic_w(R0, R1, off, op)
    };
    with_array_value(map_fd, &[mov64_imm(R1, 1), a])
}

pub(super) fn jmp32_prog() -> Vec<Insn> {
    use asm::*;
    vec![
        ldx_w(R2, R1, SKB_LEN),
        mov64_imm(R0, 0),
        jeq32_imm(R2, 0, 1),
        mov64_imm(R0, 0),
        exit(),
    ]
}

pub(super) fn connect4_prog(hash_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![
        mov64_reg(R6, R1),
        call(FN_GET_CURRENT_PID_TGID),
        mov64_reg(R1, R6),
        call(FN_GET_SOCKET_COOKIE),
        stx_dw(R10, R0, -8),
        st_dw(R10, -16, 0),
    ];
    p.extend(ld_map_fd(R1, hash_fd));
    p.extend([
        mov64_reg(R2, R10),
        add64_imm(R2, -8),
        mov64_reg(R3, R10),
        add64_imm(R3, -16),
        mov64_imm(R4, 0),
        call(FN_MAP_UPDATE_ELEM),
        // a rewrite that is never attached: 127.0.0.1:15001
        mov64_imm(R1, 0x0100_007f),
        stx_w(R6, R1, SOCK_ADDR_USER_IP4),
        mov64_imm(R1, (15001u16.to_be()) as i32),
        stx_w(R6, R1, SOCK_ADDR_USER_PORT),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

pub(super) fn getpeername4_prog(storage_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![
        mov64_reg(R6, R1),
        ldx_dw(R2, R6, SOCK_ADDR_SK),
        jeq_imm(R2, 0, 8),
    ];
    p.extend(ld_map_fd(R1, storage_fd));
    p.extend([
        mov64_imm(R3, 0),
        mov64_imm(R4, 0),
        call(FN_SK_STORAGE_GET),
        jeq_imm(R0, 0, 2),
        ldx_w(R1, R0, 0),
        stx_w(R6, R1, SOCK_ADDR_USER_IP4),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

pub(super) fn sockops_prog(sockhash_fd: RawFd, storage_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![
        mov64_reg(R6, R1),
        ldx_dw(R2, R6, SOCK_OPS_SK),
        jeq_imm(R2, 0, 5),
    ];
    p.extend(ld_map_fd(R1, storage_fd));
    // BPF_SK_STORAGE_GET_F_CREATE
    p.extend([mov64_imm(R3, 0), mov64_imm(R4, 1), call(FN_SK_STORAGE_GET)]);
    p.extend([
        mov64_reg(R1, R6),
        call(FN_GET_SOCKET_COOKIE),
        stx_dw(R10, R0, -8),
        st_w(R10, -16, 1 << 20),
        mov64_reg(R1, R6),
        mov64_imm(R2, libc::SOL_SOCKET),
        mov64_imm(R3, libc::SO_RCVBUF),
        mov64_reg(R4, R10),
        add64_imm(R4, -16),
        mov64_imm(R5, 4),
        call(FN_SETSOCKOPT),
        mov64_reg(R1, R6),
    ]);
    p.extend(ld_map_fd(R2, sockhash_fd));
    p.extend([
        mov64_reg(R3, R10),
        add64_imm(R3, -8),
        mov64_imm(R4, 0),
        call(FN_SOCK_HASH_UPDATE),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

pub(super) fn parser_prog() -> Vec<Insn> {
    use asm::*;
    vec![
        mov64_reg(R6, R1),
        ldx_w(R2, R6, SKB_CB0),
        ldx_w(R2, R6, SKB_REMOTE_IP4),
        ldx_w(R2, R6, SKB_LOCAL_PORT),
        mov64_reg(R1, R6),
        mov64_imm(R2, 0),
        mov64_reg(R3, R10),
        add64_imm(R3, -16),
        mov64_imm(R4, 9),
        call(FN_SKB_LOAD_BYTES),
        ldx_w(R0, R6, SKB_LEN),
        exit(),
    ]
}

pub(super) fn verdict_prog(sockhash_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![
        mov64_reg(R6, R1),
        call(FN_GET_SOCKET_COOKIE),
        stx_dw(R10, R0, -8),
        mov64_reg(R1, R6),
    ];
    p.extend(ld_map_fd(R2, sockhash_fd));
    p.extend([
        mov64_reg(R3, R10),
        add64_imm(R3, -8),
        mov64_imm(R4, 1), // BPF_F_INGRESS
        call(FN_SK_REDIRECT_HASH),
        exit(),
    ]);
    p
}

pub(super) fn ringbuf_prog(ringbuf_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = Vec::new();
    p.extend(ld_map_fd(R1, ringbuf_fd));
    p.extend([
        mov64_imm(R2, 16),
        mov64_imm(R3, 0),
        call(FN_RINGBUF_RESERVE),
        jeq_imm(R0, 0, 4),
        st_dw(R0, 0, 0),
        mov64_reg(R1, R0),
        mov64_imm(R2, 0),
        call(FN_RINGBUF_SUBMIT),
        mov64_imm(R0, 0),
        exit(),
    ]);
    p
}
