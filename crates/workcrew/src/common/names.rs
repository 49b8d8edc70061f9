//! The hasher of function names.

use std::hash::Hasher;

/// FNV-1a for function names: short keys, looked up on every call (routing in the pool, the
/// handler in a worker), no need for SipHash's flood resistance (the names come from the
/// program's own workers and pool).
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
