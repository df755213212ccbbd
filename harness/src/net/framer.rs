//! Cutting a proxied byte stream into units (paxos-kv frames, or raw chunks for anything
//! else) and deciding each unit's fate under a network behaviour.

use super::*;

/// One piece of a stream the proxy decides about.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub bytes: Bytes,
    /// A whole paxos-kv frame (length prefix included), which may be dropped or repeated
    /// without corrupting the stream.
    pub whole_frame: bool,
    /// The connection's first frame, the hello: never dropped or repeated, since the receiver
    /// would read the next frame as a hello and close the connection.
    pub hello: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FramerMode {
    /// Expecting a 4-byte little-endian length, then that many bytes.
    Header,
    /// Inside an oversized frame: this many bytes are left to pass through.
    Passthrough(usize),
    /// Not paxos-kv framing: every read is a unit.
    Raw,
}

/// Cuts a byte stream into units: whole frames of paxos-kv's peer transport (a u32 LE length,
/// then the body) when the stream is framed, raw chunks otherwise. Pure: bytes in, units out.
pub struct Framer {
    mode: FramerMode,
    buf: BytesMut,
    seen_hello: bool,
}

impl Framer {
    /// `framed`: try paxos-kv framing (peer links); otherwise every chunk is raw (HTTP links).
    pub fn new(framed: bool) -> Framer {
        Framer {
            mode: if framed {
                FramerMode::Header
            } else {
                FramerMode::Raw
            },
            buf: BytesMut::new(),
            seen_hello: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete unit, if the bytes pushed so far hold one.
    pub fn next_unit(&mut self) -> Option<Unit> {
        loop {
            match self.mode {
                FramerMode::Raw => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    return Some(Unit {
                        bytes: self.buf.split().freeze(),
                        whole_frame: false,
                        hello: false,
                    });
                }
                FramerMode::Passthrough(left) => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    let n = left.min(self.buf.len());
                    self.mode = if n == left {
                        FramerMode::Header
                    } else {
                        FramerMode::Passthrough(left - n)
                    };
                    return Some(Unit {
                        bytes: self.buf.split_to(n).freeze(),
                        whole_frame: false,
                        hello: false,
                    });
                }
                FramerMode::Header => {
                    if self.buf.len() < 4 {
                        return None;
                    }
                    let len =
                        u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                            as usize;
                    if !self.seen_hello && len > PROXY_HELLO_MAX_BYTES {
                        self.mode = FramerMode::Raw;
                        continue;
                    }
                    let hello = !self.seen_hello;
                    if len > PROXY_FRAME_MAX_BYTES {
                        // Too big to hold: forward it as it comes, untouched.
                        self.seen_hello = true;
                        self.mode = FramerMode::Passthrough(len);
                        return Some(Unit {
                            bytes: self.buf.split_to(4).freeze(),
                            whole_frame: false,
                            hello,
                        });
                    }
                    if self.buf.len() < 4 + len {
                        return None;
                    }
                    self.seen_hello = true;
                    return Some(Unit {
                        bytes: self.buf.split_to(4 + len).freeze(),
                        whole_frame: true,
                        hello,
                    });
                }
            }
        }
    }
}

/// What happens to one unit: how many copies go out, and how much later than now.
///
/// Over a TCP stream the proxy cannot lose or repeat bytes at random without corrupting it, so:
/// * a whole paxos-kv frame is dropped or sent twice, exactly as a lossy, duplicating network
///   would do to a datagram (the store must tolerate both);
/// * a raw chunk (an HTTP request, or a frame too big to buffer) is never dropped or repeated.
///   A lost chunk stalls the stream for [`PROXY_RETRANSMIT_STALL_MS`], which is what packet
///   loss looks like to an application above TCP (the segment is retransmitted); duplication
///   does nothing to it, since TCP discards duplicate segments before the application sees them.
pub fn decide(shaping: Option<Behaviour>, unit: &Unit, rng: &mut ChaCha8Rng) -> (usize, u64) {
    let droppable = unit.whole_frame && !unit.hello;
    match shaping {
        None => (1, 0),
        Some(Behaviour::Delay {
            delay_ms,
            jitter_ms,
        }) => {
            let j = jitter_ms as i64;
            let d = delay_ms as i64 + if j > 0 { rng.gen_range(-j..=j) } else { 0 };
            (1, d.max(0) as u64)
        }
        Some(Behaviour::Loss { percent }) => {
            let lost = rng.gen_bool((percent.min(100) as f64) / 100.0);
            match (lost, droppable) {
                (false, _) => (1, 0),
                (true, true) => (0, 0),
                (true, false) => (1, PROXY_RETRANSMIT_STALL_MS),
            }
        }
        Some(Behaviour::Duplicate { percent }) => {
            let dup = rng.gen_bool((percent.min(100) as f64) / 100.0);
            (if dup && droppable { 2 } else { 1 }, 0)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A paxos-kv frame: a little-endian u32 length, then the body.
    pub(in crate::net) fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn units(framer: &mut Framer) -> Vec<Unit> {
        std::iter::from_fn(|| framer.next_unit())
            .take(1000)
            .collect()
    }

    #[test]
    fn framer_cuts_whole_frames_across_reads_and_marks_the_hello() {
        let mut bytes = frame(b"hello");
        bytes.extend(frame(b"one"));
        bytes.extend(frame(b""));
        bytes.extend(frame(b"three"));
        let mut f = Framer::new(true);
        let mut got = Vec::new();
        // One byte at a time: every split point inside a header or a body.
        for b in &bytes {
            f.push(std::slice::from_ref(b));
            got.extend(units(&mut f));
        }
        let bodies: Vec<&[u8]> = got.iter().map(|u| &u.bytes[4..]).collect();
        assert_eq!(bodies, vec![&b"hello"[..], b"one", b"", b"three"]);
        assert!(got.iter().all(|u| u.whole_frame));
        assert_eq!(
            got.iter().map(|u| u.hello).collect::<Vec<_>>(),
            vec![true, false, false, false]
        );
        let rejoined: Vec<u8> = got.iter().flat_map(|u| u.bytes.to_vec()).collect();
        assert_eq!(rejoined, bytes);
    }

    #[test]
    fn framer_treats_http_as_raw_and_passes_huge_frames_through() {
        let mut f = Framer::new(true);
        f.push(b"GET /kv/x HTTP/1.1\r\n\r\n");
        let got = units(&mut f);
        assert_eq!(got.len(), 1);
        assert!(!got[0].whole_frame && !got[0].hello);
        assert_eq!(&got[0].bytes[..], b"GET /kv/x HTTP/1.1\r\n\r\n");

        let mut f = Framer::new(true);
        f.push(&frame(b"hi"));
        let big = PROXY_FRAME_MAX_BYTES + 10;
        f.push(&(big as u32).to_le_bytes());
        f.push(&vec![7u8; 1000]);
        let got = units(&mut f);
        assert_eq!(
            got.len(),
            3,
            "hello, the big frame's header, its first bytes"
        );
        assert!(got[0].whole_frame && got[0].hello);
        assert!(got[1..].iter().all(|u| !u.whole_frame));
        f.push(&vec![7u8; big - 1000]);
        f.push(&frame(b"after"));
        let got = units(&mut f);
        let passed: usize = got[..got.len() - 1].iter().map(|u| u.bytes.len()).sum();
        assert_eq!(passed, big - 1000);
        let last = got.last().unwrap();
        assert!(last.whole_frame && !last.hello);
        assert_eq!(&last.bytes[4..], b"after");

        let mut f = Framer::new(false);
        f.push(&frame(b"x"));
        assert!(
            !units(&mut f)[0].whole_frame,
            "forward links are never framed"
        );
    }

    #[test]
    fn decisions_follow_the_behaviour() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let frame_unit = Unit {
            bytes: Bytes::from_static(b"\x01\0\0\0x"),
            whole_frame: true,
            hello: false,
        };
        let hello = Unit {
            hello: true,
            ..frame_unit.clone()
        };
        let raw = Unit {
            whole_frame: false,
            ..frame_unit.clone()
        };
        let all_lost = Some(Behaviour::Loss { percent: 100 });
        let all_dup = Some(Behaviour::Duplicate { percent: 100 });
        assert_eq!(decide(all_lost, &frame_unit, &mut rng), (0, 0));
        // Never dropped, the hello is held back as a retransmitted segment would be.
        assert_eq!(
            decide(all_lost, &hello, &mut rng),
            (1, PROXY_RETRANSMIT_STALL_MS)
        );
        assert_eq!(
            decide(all_lost, &raw, &mut rng),
            (1, PROXY_RETRANSMIT_STALL_MS)
        );
        assert_eq!(decide(all_dup, &frame_unit, &mut rng), (2, 0));
        assert_eq!(decide(all_dup, &hello, &mut rng), (1, 0));
        assert_eq!(decide(all_dup, &raw, &mut rng), (1, 0));
        assert_eq!(decide(None, &frame_unit, &mut rng), (1, 0));
        let delay = Some(Behaviour::Delay {
            delay_ms: 100,
            jitter_ms: 20,
        });
        let delays: Vec<u64> = (0..500)
            .map(|_| decide(delay, &frame_unit, &mut rng).1)
            .collect();
        assert!(delays.iter().all(|d| (80..=120).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|&d| d < 95) && delays.iter().any(|&d| d > 105));
        // Partial loss: some frames go, some do not, and the seed decides which.
        let half = Some(Behaviour::Loss { percent: 50 });
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| decide(half, &frame_unit, &mut rng).0)
                .collect::<Vec<_>>()
        };
        let a = run(9);
        assert_eq!(a, run(9), "same seed, same decisions");
        let lost = a.iter().filter(|&&c| c == 0).count();
        assert!((50..150).contains(&lost), "{lost} of 200 lost at 50%");
    }
}
