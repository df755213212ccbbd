//! Cutting a proxied byte stream into units (paxos-kv frames, whole HTTP/1.1 requests, or raw
//! chunks for anything else) and deciding each unit's fate under a network behaviour.

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
    /// A whole HTTP/1.1 request (head and `Content-Length` body), and whether it may be
    /// delivered twice.
    pub request: Option<HttpRequest>,
}

/// What a whole HTTP request on a node-to-node link may suffer besides delay and loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpRequest {
    /// Sharded paxos-kv's group-to-group message (`POST /shard/msg`): the group core must
    /// tolerate a message delivered twice (its own retransmissions do that; the shard
    /// simulator duplicates messages), so the proxy may deliver it twice.
    Redeliverable,
    /// Anything else (a forwarded client request, a config query): never repeated, since a
    /// network under TCP never repeats a request to the application, and repeating a
    /// forwarded write without an exactly-once id would apply it twice.
    Once,
}

/// The paths whose requests the proxy may deliver twice.
pub const REDELIVERABLE_PATHS: &[&str] = &["/shard/msg"];

/// Longest HTTP request head the framer holds; a longer one turns the stream raw.
pub const HTTP_HEAD_MAX_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq)]
enum FramerMode {
    /// Expecting a 4-byte little-endian length, then that many bytes.
    Header,
    /// Inside an oversized frame: this many bytes are left to pass through.
    Passthrough(usize),
    /// Not paxos-kv framing: every read is a unit.
    Raw,
    /// HTTP/1.1 requests, each cut whole by its head and `Content-Length`; anything the framer
    /// cannot cut soundly (a chunked body, a huge head or body, not HTTP) turns the rest of
    /// the stream raw.
    HttpRequests,
}

/// How a proxied stream is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// paxos-kv's peer transport (peer links, towards the node dialled).
    PaxosFrames,
    /// HTTP/1.1 requests (node-to-node HTTP links, towards the node dialled).
    HttpRequests,
    /// Every read as it comes (replies).
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
    pub fn new(framing: Framing) -> Framer {
        Framer {
            mode: match framing {
                Framing::PaxosFrames => FramerMode::Header,
                Framing::HttpRequests => FramerMode::HttpRequests,
                Framing::Raw => FramerMode::Raw,
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
                        request: None,
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
                        request: None,
                    });
                }
                FramerMode::HttpRequests => {
                    let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if self.buf.len() > HTTP_HEAD_MAX_BYTES {
                            self.mode = FramerMode::Raw;
                            continue;
                        }
                        return None;
                    };
                    let head_len = head_end + 4;
                    let Some((kind, body_len)) = parse_request_head(&self.buf[..head_len]) else {
                        self.mode = FramerMode::Raw;
                        continue;
                    };
                    if body_len > PROXY_FRAME_MAX_BYTES {
                        // Too big to hold: the rest of the stream goes as it comes, untouched.
                        self.mode = FramerMode::Raw;
                        continue;
                    }
                    if self.buf.len() < head_len + body_len {
                        return None;
                    }
                    return Some(Unit {
                        bytes: self.buf.split_to(head_len + body_len).freeze(),
                        whole_frame: false,
                        hello: false,
                        request: Some(kind),
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
                            request: None,
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
                        request: None,
                    });
                }
            }
        }
    }
}

/// An HTTP/1.1 request head's kind and body length, or None when the framer cannot cut the
/// request soundly (not a request line, a chunked or otherwise encoded body, a bad length).
pub fn parse_request_head(head: &[u8]) -> Option<(HttpRequest, usize)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let mut body_len = 0usize;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.trim().parse().ok()?;
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    let kind = if method == "POST" && REDELIVERABLE_PATHS.contains(&path) {
        HttpRequest::Redeliverable
    } else {
        HttpRequest::Once
    };
    Some((kind, body_len))
}

/// What happens to one unit: how many copies go out, and how much later than now.
///
/// Over a TCP stream the proxy cannot lose or repeat bytes at random without corrupting it, so:
/// * a whole paxos-kv frame is dropped or sent twice, exactly as a lossy, duplicating network
///   would do to a datagram (the store must tolerate both);
/// * a whole HTTP request between nodes is lost whole (the node that sent it waits for an
///   answer that never comes and times out, as behind a partition: its outcome is unknown to
///   it, and nothing was applied), and delivered twice only when it is
///   [`HttpRequest::Redeliverable`] (the proxy sends the copy on a connection of its own and
///   discards its answer, so the sender still reads exactly one answer);
/// * a raw chunk (a reply, or a frame or request too big to buffer) is never dropped or
///   repeated. A lost chunk stalls the stream for [`PROXY_RETRANSMIT_STALL_MS`], which is what
///   packet loss looks like to an application above TCP (the segment is retransmitted);
///   duplication does nothing to it, since TCP discards duplicate segments before the
///   application sees them.
pub fn decide(shaping: Option<Behaviour>, unit: &Unit, rng: &mut ChaCha8Rng) -> (usize, u64) {
    let droppable = (unit.whole_frame && !unit.hello) || unit.request.is_some();
    let repeatable =
        (unit.whole_frame && !unit.hello) || unit.request == Some(HttpRequest::Redeliverable);
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
            (if dup && repeatable { 2 } else { 1 }, 0)
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
        let mut f = Framer::new(Framing::PaxosFrames);
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
        let mut f = Framer::new(Framing::PaxosFrames);
        f.push(b"GET /kv/x HTTP/1.1\r\n\r\n");
        let got = units(&mut f);
        assert_eq!(got.len(), 1);
        assert!(!got[0].whole_frame && !got[0].hello);
        assert_eq!(&got[0].bytes[..], b"GET /kv/x HTTP/1.1\r\n\r\n");

        let mut f = Framer::new(Framing::PaxosFrames);
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

        let mut f = Framer::new(Framing::Raw);
        f.push(&frame(b"x"));
        assert!(!units(&mut f)[0].whole_frame, "replies are never framed");
    }

    #[test]
    fn http_requests_are_cut_whole_and_anything_else_turns_the_stream_raw() {
        let msg = b"POST /shard/msg HTTP/1.1\r\nhost: x\r\nContent-Length: 5\r\n\r\nhello";
        let get = b"GET /shards/config?consistency=local HTTP/1.1\r\nhost: x\r\n\r\n";
        let put = b"PUT /kv/a HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        let mut bytes = msg.to_vec();
        bytes.extend_from_slice(get);
        bytes.extend_from_slice(put);
        let mut f = Framer::new(Framing::HttpRequests);
        let mut got = Vec::new();
        for b in &bytes {
            f.push(std::slice::from_ref(b));
            got.extend(units(&mut f));
        }
        let cut: Vec<&[u8]> = got.iter().map(|u| &u.bytes[..]).collect();
        assert_eq!(cut, vec![&msg[..], &get[..], &put[..]]);
        assert_eq!(
            got.iter().map(|u| u.request).collect::<Vec<_>>(),
            vec![
                Some(HttpRequest::Redeliverable),
                Some(HttpRequest::Once),
                Some(HttpRequest::Once)
            ]
        );
        // A chunked body cannot be cut by length: the rest of the stream passes raw.
        let mut f = Framer::new(Framing::HttpRequests);
        f.push(b"POST /shard/msg HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello");
        let got = units(&mut f);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].request, None);
        f.push(msg);
        assert_eq!(units(&mut f)[0].request, None, "raw for good");
        // Not HTTP at all.
        let mut f = Framer::new(Framing::HttpRequests);
        f.push(&frame(b"hello\r\n\r\n"));
        assert_eq!(units(&mut f)[0].request, None);
        assert_eq!(
            parse_request_head(b"POST /shard/msg?x=1 HTTP/1.1\r\ncontent-length: 7\r\n\r\n"),
            Some((HttpRequest::Redeliverable, 7))
        );
        assert_eq!(
            parse_request_head(b"GET /shard/msg HTTP/1.1\r\n\r\n"),
            Some((HttpRequest::Once, 0))
        );
        assert_eq!(
            parse_request_head(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            None
        );
    }

    #[test]
    fn decisions_follow_the_behaviour() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let frame_unit = Unit {
            bytes: Bytes::from_static(b"\x01\0\0\0x"),
            whole_frame: true,
            hello: false,
            request: None,
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
        // Whole requests are lost whole; only a redeliverable one is delivered twice.
        let once = Unit {
            whole_frame: false,
            request: Some(HttpRequest::Once),
            ..frame_unit.clone()
        };
        let redeliverable = Unit {
            request: Some(HttpRequest::Redeliverable),
            ..once.clone()
        };
        assert_eq!(decide(all_lost, &once, &mut rng), (0, 0));
        assert_eq!(decide(all_lost, &redeliverable, &mut rng), (0, 0));
        assert_eq!(decide(all_dup, &once, &mut rng), (1, 0));
        assert_eq!(decide(all_dup, &redeliverable, &mut rng), (2, 0));
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
