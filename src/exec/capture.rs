//! Bounded capture of one output stream: the first `head` bytes and the last
//! `tail` bytes are kept, with an explicit marker for what was dropped between
//! them. Memory stays bounded whatever the step prints (binary, one huge line,
//! gigabytes); text is decoded lossily as UTF-8 only when read.

use std::fmt::Write as _;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A capped byte buffer keeping head and tail.
#[derive(Debug, Clone)]
pub struct Capture {
    head: Vec<u8>,
    /// A ring of the last `tail_cap` bytes; once full, `tail_start` is its oldest byte.
    tail: Vec<u8>,
    tail_start: usize,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

impl Capture {
    /// Keeps at most `head_cap` first and `tail_cap` last bytes.
    #[must_use]
    pub fn new(head_cap: usize, tail_cap: usize) -> Self {
        Capture {
            head: Vec::new(),
            tail: Vec::new(),
            tail_start: 0,
            head_cap,
            tail_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if self.head.len() < self.head_cap {
            let n = chunk.len().min(self.head_cap - self.head.len());
            self.head.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
        }
        if self.tail_cap == 0 || chunk.is_empty() {
            return;
        }
        if chunk.len() >= self.tail_cap {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - self.tail_cap..]);
            self.tail_start = 0;
            return;
        }
        let room = self.tail_cap - self.tail.len();
        let fill = room.min(chunk.len());
        self.tail.extend_from_slice(&chunk[..fill]);
        let mut rest = &chunk[fill..];
        // Full: overwrite the oldest bytes, wrapping around.
        while !rest.is_empty() {
            let n = rest.len().min(self.tail_cap - self.tail_start);
            self.tail[self.tail_start..self.tail_start + n].copy_from_slice(&rest[..n]);
            self.tail_start = (self.tail_start + n) % self.tail_cap;
            rest = &rest[n..];
        }
    }

    fn tail_bytes(&self) -> Vec<u8> {
        let (newer, older) = self.tail.split_at(self.tail_start);
        [older, newer].concat()
    }

    /// Every byte the stream produced, kept or not.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes dropped between head and tail.
    #[must_use]
    pub fn omitted(&self) -> u64 {
        self.total - self.head.len() as u64 - self.tail.len() as u64
    }

    /// The kept output as text, with a marker where bytes were dropped.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        let omitted = self.omitted();
        if omitted > 0 {
            if !s.ends_with('\n') {
                s.push('\n');
            }
            let _ = writeln!(s, "[… runbookd: {omitted} bytes of output omitted …]");
        }
        s.push_str(&String::from_utf8_lossy(&self.tail_bytes()));
        s
    }

    /// At most the last `max` bytes of output, as text (for `steps.NAME.stdout`).
    #[must_use]
    pub fn last(&self, max: usize) -> String {
        // Head and tail are contiguous only when nothing was dropped between them.
        let mut bytes = self.tail_bytes();
        if self.omitted() == 0 {
            bytes = [self.head.as_slice(), &bytes].concat();
        }
        let start = bytes.len().saturating_sub(max);
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_caps() {
        let mut c = Capture::new(8, 8);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.text(), "hello world");
        assert_eq!((c.total(), c.omitted()), (11, 0));
        assert_eq!(c.last(5), "world");
        assert_eq!(c.last(100), "hello world");
    }

    #[test]
    fn keeps_head_and_tail_with_a_marker() {
        let mut c = Capture::new(4, 4);
        for chunk in [&b"abcdef"[..], b"ghij", b"klmnopqrstuvwxyz"] {
            c.push(chunk);
        }
        assert_eq!(
            c.text(),
            "abcd\n[… runbookd: 18 bytes of output omitted …]\nwxyz"
        );
        assert_eq!(c.omitted(), 18);
        assert_eq!(c.last(2), "yz");
    }

    #[test]
    fn the_tail_ring_wraps_in_order() {
        let mut c = Capture::new(0, 5);
        for chunk in [&b"ab"[..], b"cd", b"ef", b"g", b"hijk", b"l"] {
            c.push(chunk);
        }
        assert_eq!(c.last(100), "hijkl");
        assert_eq!(
            c.text(),
            "\n[… runbookd: 7 bytes of output omitted …]\nhijkl"
        );
        let mut c = Capture::new(2, 3);
        c.push(b"123456789");
        assert_eq!(
            c.text(),
            "12\n[… runbookd: 4 bytes of output omitted …]\n789"
        );
    }

    #[test]
    fn binary_output_is_decoded_lossily() {
        let mut c = Capture::new(16, 16);
        c.push(&[0xff, 0xfe, b'o', b'k', 0]);
        assert_eq!(c.text(), "\u{fffd}\u{fffd}ok\0");
    }

    #[test]
    fn memory_stays_bounded_for_huge_output() {
        let mut c = Capture::new(1024, 1024);
        let chunk = vec![b'x'; 65536];
        for _ in 0..1000 {
            c.push(&chunk);
        }
        assert_eq!(c.total(), 65_536_000);
        assert!(c.head.capacity() <= 2048 && c.tail.capacity() <= 2048);
    }
}
