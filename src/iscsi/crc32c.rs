//! CRC32C (Castagnoli), the iSCSI header and data digest (RFC 7143 §13.1,
//! test vectors in RFC 3720 Appendix B.4).
//!
//! The checksum itself comes from the `crc32c` crate, which uses SSE4.2 or
//! ARMv8 CRC instructions when the CPU has them. This module only fixes how a
//! digest is laid on the wire: the 32-bit value in little-endian byte order,
//! which is what the RFC 3720 B.4 byte listings and every initiator use.

/// The CRC32C of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a checksum over further bytes, as if they had followed the
/// bytes `crc` was computed over.
pub fn extend(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// The four digest bytes as they go on the wire.
pub fn to_wire(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// Reads four digest bytes from the wire.
pub fn from_wire(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bc_21_3_rfc3720_b4_vectors() {
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(checksum(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(checksum(&descending), 0x113F_DB5C);
    }

    #[test]
    fn wire_order_matches_rfc_listing() {
        // RFC 3720 B.4 lists the digest of 32 zero bytes as "aa 36 91 8a".
        assert_eq!(to_wire(checksum(&[0u8; 32])), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(from_wire([0xaa, 0x36, 0x91, 0x8a]), 0x8A91_36AA);
    }

    #[test]
    fn extend_equals_one_pass() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        let (a, b) = bytes.split_at(100);
        assert_eq!(extend(checksum(a), b), checksum(&bytes));
    }
}
