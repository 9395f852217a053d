//! Finds where HTTP/1.1 requests start in a client's byte stream, so a proxy can
//! count requests and cut a connection exactly at a request boundary.

/// Largest request head the tracker parses before it gives up.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// Collecting a request head (empty buffer = between requests).
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Body(u64),
    /// Reading a chunk-size line of a chunked body.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkEnd(u8),
    /// Reading trailer lines after the last chunk.
    Trailer(Vec<u8>),
    /// Not HTTP we understand: stop tracking.
    Opaque,
}

/// Incremental tracker of request boundaries in one client→server byte stream.
#[derive(Debug)]
pub(crate) struct RequestTracker {
    state: State,
}

impl Default for RequestTracker {
    fn default() -> Self {
        RequestTracker {
            state: State::Head(Vec::new()),
        }
    }
}

impl RequestTracker {
    /// Whether the stream stopped looking like HTTP/1.1.
    #[cfg(test)]
    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Feeds the next bytes; returns the offsets in `data` at which new requests begin.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                State::Opaque => break,
                State::Head(buf) => {
                    if buf.is_empty() {
                        starts.push(pos);
                    }
                    buf.push(data[pos]);
                    pos += 1;
                    if buf.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(buf);
                        self.state = body_state(&head);
                    } else if buf.len() > MAX_HEAD {
                        self.state = State::Opaque;
                    }
                }
                State::Body(remaining) => {
                    let take = (*remaining).min((data.len() - pos) as u64);
                    pos += take as usize;
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    line.push(data[pos]);
                    pos += 1;
                    if line.ends_with(b"\n") {
                        let text = String::from_utf8_lossy(line);
                        let size = text.trim().split(';').next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailer(Vec::new()),
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Opaque,
                        };
                    } else if line.len() > MAX_HEAD {
                        self.state = State::Opaque;
                    }
                }
                State::ChunkData(remaining) => {
                    let take = (*remaining).min((data.len() - pos) as u64);
                    pos += take as usize;
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    pos += 1;
                    *left -= 1;
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailer(line) => {
                    line.push(data[pos]);
                    pos += 1;
                    if line.ends_with(b"\n") {
                        if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" {
                            self.state = State::Head(Vec::new());
                        } else {
                            line.clear();
                        }
                    } else if line.len() > MAX_HEAD {
                        self.state = State::Opaque;
                    }
                }
            }
        }
        starts
    }
}

/// Decides how the body after a complete request head is framed.
fn body_state(head: &[u8]) -> State {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return State::Opaque,
    }
    let mut chunked = false;
    let mut length = None;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u64>() {
                Ok(n) => length = Some(n),
                Err(_) => return State::Opaque,
            }
        }
    }
    if chunked {
        State::ChunkSize(Vec::new())
    } else {
        match length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_bytewise(stream: &[u8]) -> Vec<usize> {
        let mut tracker = RequestTracker::default();
        let mut starts = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            starts.extend(
                tracker
                    .feed(std::slice::from_ref(b))
                    .into_iter()
                    .map(|s| s + i),
            );
        }
        starts
    }

    #[test]
    fn finds_requests_with_length_and_chunked_bodies() {
        let r1 = b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let r2 = b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let r3 = b"PUT /b/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec();
        let r4 = b"DELETE /b/k HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for r in [&r1, &r2, &r3, &r4] {
            expected.push(stream.len());
            stream.extend_from_slice(r);
        }
        let mut tracker = RequestTracker::default();
        assert_eq!(tracker.feed(&stream), expected);
        assert_eq!(starts_bytewise(&stream), expected);
        assert!(!tracker.is_opaque());
    }

    #[test]
    fn garbage_turns_the_tracker_off() {
        let mut tracker = RequestTracker::default();
        tracker.feed(b"\x16\x03\x01 binary tls hello\r\n\r\n");
        assert!(tracker.is_opaque());
        assert!(tracker.feed(b"GET / HTTP/1.1\r\n\r\n").is_empty());
    }
}
