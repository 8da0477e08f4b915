//! Serial number arithmetic on 32-bit sequence numbers (RFC 1982, as RFC
//! 7143 §4.2.2.1 requires for CmdSN, StatSN, DataSN and R2TSN).
//!
//! Two numbers compare by the sign of their wrapping difference, so the
//! order survives the wrap from 0xffffffff to 0. Numbers 2^31 apart are
//! incomparable; windows here are far smaller (at most 4096 wide).

/// `a < b` in serial arithmetic.
pub fn lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

/// `lo <= sn <= hi` in serial arithmetic; an empty window (hi = lo - 1)
/// holds nothing.
pub fn in_window(sn: u32, lo: u32, hi: u32) -> bool {
    !lt(sn, lo) && !lt(hi, sn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_across_wrap() {
        assert!(lt(1, 2));
        assert!(lt(0xffff_fffe, 0xffff_ffff));
        assert!(lt(0xffff_ffff, 0));
        assert!(lt(0xffff_fff0, 0x10));
        assert!(!lt(0x10, 0xffff_fff0));
        assert!(!lt(5, 5));
    }

    #[test]
    fn windows() {
        assert!(in_window(0, 0xffff_fff0, 0x6f));
        assert!(in_window(0xffff_fff0, 0xffff_fff0, 0x6f));
        assert!(in_window(0x6f, 0xffff_fff0, 0x6f));
        assert!(!in_window(0x70, 0xffff_fff0, 0x6f));
        assert!(!in_window(0xffff_ffef, 0xffff_fff0, 0x6f));
        // Closed window: MaxCmdSN = ExpCmdSN - 1.
        assert!(!in_window(5, 5, 4));
        assert!(!in_window(4, 5, 4));
    }
}
