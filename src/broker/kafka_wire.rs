//! The few Kafka requests the `kafka-rust` client makes itself, on
//! connections of its own: ApiVersions v0, a Fetch (v4, or v2 for Kafka
//! 0.10) of which only the record batch headers are read, and Metadata v10
//! for the topic's id.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub const API_FETCH: i16 = 1;
pub const API_LIST_OFFSETS: i16 = 2;
pub const API_METADATA: i16 = 3;
pub const API_OFFSET_COMMIT: i16 = 8;
pub const API_OFFSET_FETCH: i16 = 9;
pub const API_FIND_COORDINATOR: i16 = 10;
const API_VERSIONS: i16 = 18;

pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;

/// The attribute bit of a control batch (message format v2).
const CONTROL_BIT: i16 = 0x20;

/// A TCP connection with connect, read and write timeouts.
pub fn connect(host: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in host.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads the fields of one response, never past its end.
pub struct Reader<R> {
    input: R,
    left: usize,
}

impl<R: Read> Reader<R> {
    pub fn new(input: R, left: usize) -> Reader<R> {
        Reader { input, left }
    }

    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        if N > self.left {
            return Err(bad("response shorter than its fields"));
        }
        let mut bytes = [0; N];
        self.input.read_exact(&mut bytes)?;
        self.left -= N;
        Ok(bytes)
    }

    fn i8(&mut self) -> io::Result<i8> {
        Ok(i8::from_be_bytes(self.take()?))
    }

    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    fn skip(&mut self, n: usize) -> io::Result<()> {
        if n > self.left {
            return Err(bad("response shorter than its fields"));
        }
        let copied = io::copy(&mut (&mut self.input).take(n as u64), &mut io::sink())?;
        if copied != n as u64 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(())
    }

    fn string(&mut self) -> io::Result<()> {
        let len = self.i16()?;
        self.skip(usize::try_from(len).unwrap_or(0))
    }

    fn array_len(&mut self) -> io::Result<usize> {
        Ok(usize::try_from(self.i32()?).unwrap_or(0))
    }

    /// An unsigned varint, as the flexible versions encode lengths.
    fn uvarint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take::<1>()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 64 bits"))
    }

    /// A signed (zigzag) varint, as record fields are encoded.
    fn varint(&mut self) -> io::Result<i64> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// `n` bytes, of which the first `keep` are returned.
    fn bytes_kept(&mut self, n: usize, keep: usize) -> io::Result<Vec<u8>> {
        let kept = n.min(keep);
        if n > self.left {
            return Err(bad("response shorter than its fields"));
        }
        let mut bytes = vec![0; kept];
        self.input.read_exact(&mut bytes)?;
        self.left -= kept;
        self.skip(n - kept)?;
        Ok(bytes)
    }

    /// A compact array's or string's length (encoded plus one; 0 is null).
    fn compact_len(&mut self) -> io::Result<usize> {
        usize::try_from(self.uvarint()?.saturating_sub(1)).map_err(|_| bad("length too large"))
    }

    fn compact_string(&mut self) -> io::Result<Vec<u8>> {
        let len = self.compact_len()?;
        if len > self.left {
            return Err(bad("response shorter than its fields"));
        }
        let mut bytes = vec![0; len];
        self.input.read_exact(&mut bytes)?;
        self.left -= len;
        Ok(bytes)
    }

    fn tagged_fields(&mut self) -> io::Result<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| bad("length too large"))?;
            self.skip(size)?;
        }
        Ok(())
    }
}

fn put_string(buffer: &mut Vec<u8>, s: &str) {
    buffer.extend_from_slice(&(s.len() as i16).to_be_bytes());
    buffer.extend_from_slice(s.as_bytes());
}

/// This module's connections, one per broker host, each kept while its
/// responses are read to their end.
pub struct Conns {
    client_id: String,
    timeout: Duration,
    open: HashMap<String, (TcpStream, i32)>,
}

impl Conns {
    pub fn new(client_id: &str, timeout: Duration) -> Conns {
        Conns {
            client_id: client_id.to_string(),
            timeout,
            open: HashMap::new(),
        }
    }

    /// Sends one request to `host` and reads its response with `parse`.
    /// The connection is kept when the rest of the response, drained,
    /// is at most `drain_limit` bytes; dropped otherwise and on error. A
    /// kept connection that fails (closed by the broker while idle) is
    /// replaced once.
    fn call<T>(
        &mut self,
        host: &str,
        (api_key, version, flexible): (i16, i16, bool),
        body: &[u8],
        drain_limit: usize,
        parse: impl Fn(&mut Reader<&mut TcpStream>) -> io::Result<T>,
    ) -> io::Result<T> {
        let request = (api_key, version, flexible);
        if let Some(kept) = self.open.remove(host) {
            let attempt = self.call_on(host, kept, request, body, drain_limit, &parse);
            if attempt.is_ok() {
                return attempt;
            }
        }
        let stream = connect(host, self.timeout)?;
        self.call_on(host, (stream, 0), request, body, drain_limit, &parse)
    }

    /// `flexible`: the request and response headers of the versions with
    /// tagged fields (request header v2, response header v1).
    fn call_on<T>(
        &mut self,
        host: &str,
        (mut stream, correlation_id): (TcpStream, i32),
        (api_key, version, flexible): (i16, i16, bool),
        body: &[u8],
        drain_limit: usize,
        parse: &impl Fn(&mut Reader<&mut TcpStream>) -> io::Result<T>,
    ) -> io::Result<T> {
        let correlation_id = correlation_id.wrapping_add(1);
        let mut message = vec![0; 4];
        message.extend_from_slice(&api_key.to_be_bytes());
        message.extend_from_slice(&version.to_be_bytes());
        message.extend_from_slice(&correlation_id.to_be_bytes());
        put_string(&mut message, &self.client_id);
        if flexible {
            message.push(0); // no tagged fields
        }
        message.extend_from_slice(body);
        let size = (message.len() - 4) as i32;
        message[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&message)?;
        let mut size = [0; 4];
        stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size)).map_err(|_| bad("negative size"))?;
        let mut reader = Reader::new(&mut stream, size);
        if reader.i32()? != correlation_id {
            return Err(bad("response to another request"));
        }
        if flexible {
            reader.tagged_fields()?;
        }
        let value = parse(&mut reader)?;
        if reader.left <= drain_limit {
            let left = reader.left;
            reader.skip(left)?;
            self.open.insert(host.to_string(), (stream, correlation_id));
        }
        Ok(value)
    }

    /// The broker's API versions: (API key, min, max).
    pub fn api_versions(&mut self, host: &str) -> io::Result<Vec<(i16, i16, i16)>> {
        // A closure: the function item is bound to one lifetime of the
        // reader, and `call` needs any.
        #[allow(clippy::redundant_closure)]
        self.call(host, (API_VERSIONS, 0, false), &[], 0, |r| {
            parse_api_versions(r)
        })
    }

    /// The headers of the batches of one partition from `offset`, as a
    /// Fetch of `version` (2 or 4, read uncommitted) returns them.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_headers(
        &mut self,
        host: &str,
        version: i16,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        capture: Option<Capture>,
    ) -> io::Result<Layout> {
        let mut body = Vec::with_capacity(64 + topic.len());
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&0i32.to_be_bytes()); // max wait
        body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
        if version >= 3 {
            body.extend_from_slice(&max_bytes.to_be_bytes());
        }
        if version >= 4 {
            body.push(0); // read uncommitted, as Fetch v0
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, topic);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&max_bytes.to_be_bytes());
        // The rest of a response up to the fetch size is drained; past
        // it (a huge first batch) the connection is dropped instead.
        let drain_limit = usize::try_from(max_bytes).unwrap_or(0);
        self.call(host, (API_FETCH, version, false), &body, drain_limit, |r| {
            parse_fetch(r, version, max_bytes, capture)
        })
    }
}

/// What Metadata says of one topic's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicId {
    /// Kafka's id of the topic (all zeros from brokers without ids).
    Id([u8; 16]),
    /// The broker knows no topic of that name.
    Missing,
    /// Another error code for the topic.
    Failed(i16),
}

/// Kafka's error code for an unknown topic or partition.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

impl Conns {
    /// The topic's id, from Metadata v10 (Kafka 2.8 and later), asked
    /// without creating the topic.
    pub fn topic_id(&mut self, host: &str, topic: &str) -> io::Result<TopicId> {
        let body = metadata_request(topic);
        // The rest (the partitions) is drained: a few bytes per partition.
        self.call(host, (API_METADATA, 10, true), &body, 1 << 20, |r| {
            parse_metadata_topic_id(r)
        })
    }
}

/// The body of a Metadata v10 request for one topic by name, which a broker
/// with `auto.create.topics.enable=true` must not create.
pub fn metadata_request(topic: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + topic.len());
    body.push(2); // one topic (compact array: length plus one)
    body.extend_from_slice(&[0; 16]); // no topic id: asked by name
    put_compact_string(&mut body, topic);
    body.push(0); // tagged fields of the topic
    body.push(0); // allow auto topic creation: false
    body.push(0); // include cluster authorized operations
    body.push(0); // include topic authorized operations
    body.push(0); // tagged fields
    body
}

fn put_compact_string(buffer: &mut Vec<u8>, s: &str) {
    // Topic names are at most 249 bytes: one or two varint bytes.
    let mut len = s.len() as u64 + 1;
    while len >= 0x80 {
        buffer.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    buffer.push(len as u8);
    buffer.extend_from_slice(s.as_bytes());
}

/// Reads a Metadata v10 response up to the first topic's id.
pub fn parse_metadata_topic_id<R: Read>(r: &mut Reader<R>) -> io::Result<TopicId> {
    r.i32()?; // throttle time
    for _ in 0..r.compact_len()? {
        r.i32()?; // node id
        r.compact_string()?; // host
        r.i32()?; // port
        r.compact_string()?; // rack
        r.tagged_fields()?;
    }
    r.compact_string()?; // cluster id
    r.i32()?; // controller id
    if r.compact_len()? != 1 {
        return Err(bad("not one topic in the metadata response"));
    }
    let error = r.i16()?;
    r.compact_string()?; // name
    let id: [u8; 16] = r.take()?;
    Ok(match error {
        0 => TopicId::Id(id),
        UNKNOWN_TOPIC_OR_PARTITION => TopicId::Missing,
        code => TopicId::Failed(code),
    })
}

/// A topic id as Kafka prints it: base64 without padding (22 characters),
/// in the standard alphabet as librdkafka prints it.
pub fn topic_id_text(id: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(22);
    for chunk in id.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for i in 0..=chunk.len() {
            text.push(ALPHABET[(bits >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    text
}

pub fn parse_api_versions<R: Read>(r: &mut Reader<R>) -> io::Result<Vec<(i16, i16, i16)>> {
    let error = r.i16()?;
    if error != 0 {
        return Err(io::Error::other(format!("ApiVersions error {error}")));
    }
    let n = r.array_len()?;
    let mut versions = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        versions.push((r.i16()?, r.i16()?, r.i16()?));
    }
    Ok(versions)
}

/// One record batch (message format v2) or message (v0, v1) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its first offset; unknown for a compressed v0/v1 message, whose
    /// offset is that of its last inner message.
    pub base: Option<i64>,
    pub last: i64,
    /// Where it ends, in bytes from the start of the fetched data.
    pub end: i64,
    pub control: bool,
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub codec: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub error: i16,
    pub high_watermark: i64,
    /// From the batch holding the requested offset, in log order: the
    /// headers up to the first batch that ends past `max_bytes` or is
    /// cut off.
    pub batches: Vec<Batch>,
    /// The record `Capture` asked for, when its batch was read.
    pub record: Option<CapturedRecord>,
}

/// Asks `parse_fetch` for the first record at or after `offset` of the
/// first data batch, when that batch is plain (message format v2,
/// uncompressed) and ends past `batch_end_over` bytes: a batch too large to
/// fetch, whose records the broker sends anyway as the first batch of the
/// header fetch's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    pub offset: i64,
    pub batch_end_over: i64,
    /// The bytes of key and of value kept, each.
    pub keep: usize,
}

/// A record read by `Capture`: its key and value, each cut to `keep` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The whole key's and value's bytes.
    pub size: usize,
}

/// Reads the records of a plain v2 batch from just after its last offset
/// delta (`rest` bytes left of it), and returns the first at or after
/// `offset`. `None` when the batch holds none or does not read as records.
fn capture_record<R: Read>(
    r: &mut Reader<R>,
    base: i64,
    rest: usize,
    offset: i64,
    keep: usize,
) -> io::Result<Option<CapturedRecord>> {
    // First and max timestamp, producer id and epoch, base sequence.
    const HEADER_REST: usize = 8 + 8 + 8 + 2 + 4;
    if rest < HEADER_REST + 4 {
        return Ok(None);
    }
    r.skip(HEADER_REST)?;
    let count = r.i32()?;
    let end = r.left - (rest - HEADER_REST - 4);
    for _ in 0..count.max(0) {
        let length = r.varint()?;
        let start = r.left;
        let Ok(length) = usize::try_from(length) else {
            return Ok(None);
        };
        if length > start || start - length < end {
            return Ok(None);
        }
        r.i8()?; // attributes
        r.varint()?; // timestamp delta
        let record_offset = base + r.varint()?;
        let wanted = record_offset >= offset;
        let mut size = 0;
        let mut fields = [Vec::new(), Vec::new()];
        for field in &mut fields {
            if !wanted {
                break;
            }
            let len = r.varint()?;
            let Ok(len) = usize::try_from(len) else {
                // A null key or value (-1) has no bytes.
                continue;
            };
            if len > r.left.saturating_sub(start - length) {
                return Ok(None);
            }
            size += len;
            *field = r.bytes_kept(len, keep)?;
        }
        if wanted {
            let [key, value] = fields;
            return Ok(Some(CapturedRecord {
                offset: record_offset,
                key,
                value,
                size,
            }));
        }
        let read = start - r.left;
        if read > length {
            return Ok(None);
        }
        r.skip(length - read)?;
    }
    Ok(None)
}

pub fn parse_fetch<R: Read>(
    r: &mut Reader<R>,
    version: i16,
    max_bytes: i32,
    capture: Option<Capture>,
) -> io::Result<Layout> {
    if version >= 1 {
        r.i32()?; // throttle time
    }
    if r.array_len()? != 1 {
        return Err(bad("not one topic in the fetch response"));
    }
    r.string()?;
    if r.array_len()? != 1 {
        return Err(bad("not one partition in the fetch response"));
    }
    r.i32()?; // partition
    let error = r.i16()?;
    let high_watermark = r.i64()?;
    if version >= 4 {
        r.i64()?; // last stable offset
        let aborted = r.i32()?;
        r.skip(usize::try_from(aborted).unwrap_or(0) * 16)?;
    }
    let mut layout = Layout {
        error,
        high_watermark,
        batches: Vec::new(),
        record: None,
    };
    let mut left = usize::try_from(r.i32()?).unwrap_or(0);
    if error != 0 {
        return Ok(layout);
    }
    let mut position: i64 = 0;
    // offset, size, then 5 bytes to the magic byte; a v2 batch header
    // goes on to its last offset delta 10 bytes further.
    while left >= 17 {
        let base = r.i64()?;
        let size = r.i32()?;
        r.skip(4)?;
        let magic = r.i8()?;
        left -= 17;
        let stored = 12 + i64::from(size);
        if size < 14 {
            return Err(bad("record batch shorter than its header"));
        }
        let batch = if magic >= 2 {
            if left < 10 {
                break;
            }
            r.skip(4)?; // crc
            let attributes = r.i16()?;
            let last_delta = r.i32()?;
            left -= 10;
            Batch {
                base: Some(base),
                last: base + i64::from(last_delta),
                end: position + stored,
                control: attributes & CONTROL_BIT != 0,
                codec: (attributes & 0x07) as u8,
            }
        } else {
            if left < 1 {
                break;
            }
            let attributes = r.i8()?;
            left -= 1;
            let codec = (attributes & 0x07) as u8;
            Batch {
                base: (codec == 0).then_some(base),
                last: base,
                end: position + stored,
                control: false,
                codec,
            }
        };
        let read = if magic >= 2 { 27 } else { 18 };
        let rest = usize::try_from(stored - read)
            .map_err(|_| bad("record batch shorter than its header"))?;
        let end = batch.end;
        let first_data_batch = !batch.control && layout.batches.iter().all(|b| b.control);
        let plain = magic >= 2 && batch.codec == 0;
        let base = batch.base;
        layout.batches.push(batch);
        if let (Some(c), Some(base)) = (capture, base) {
            if first_data_batch && plain && end > c.batch_end_over && rest <= left {
                layout.record = capture_record(r, base, rest, c.offset, c.keep)?;
                break;
            }
        }
        if end > i64::from(max_bytes) || rest > left {
            break;
        }
        r.skip(rest)?;
        left -= rest;
        position = end;
    }
    Ok(layout)
}
