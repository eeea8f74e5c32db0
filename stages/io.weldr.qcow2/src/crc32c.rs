//! CRC-32C (Castagnoli), which ext4 and VHDX checksum their structures with.

/// CRC-32C continued from `crc`, with no inversion before or after: as
/// ext4 chains its checksums.
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32C of `data` (inverted before and after, as VHDX and RFC 3720 have it).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        // The check value of CRC-32C (RFC 3720, B.4).
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
    }
}
