//! Frames: the fixed header, the encoder and the sans-I/O decoder.
//!
//! ```text
//! offset size field
//!      0    4 len          u32 LE: whole frame in bytes (header + payload + padding)
//!      4    4 crc          u32 LE: crc32 (IEEE, crc32fast) of bytes [8, len)
//!      8    8 request_id   u64 LE: chosen by the requester, echoed by the answer
//!     16    2 kind         u16 LE: FrameKind
//!     18    2 flags        u16 LE: reserved, 0
//!     20    4 payload_len  u32 LE: bytes of the rkyv archive that follows
//!     24      payload      rkyv archive of the kind's type, then 0..7 zero bytes so that
//!                          len is a multiple of 8 (encoders always pad; decoders accept
//!                          any padding below 8)
//! ```
//!
//! Invariants: `HEADER_LEN <= len <= max_frame_bytes`; `payload_len <= len - HEADER_LEN
//! < payload_len + FRAME_ALIGN`. The decoder checks, in order: the length bound (before
//! allocating anything for the frame), the crc, the header's own consistency, then the
//! payload's rkyv validity against the type the kind names, then whether the kind is
//! accepted on this connection. The first three failures are fatal (the stream cannot
//! be re-synchronised: close the connection); the last two are answered with an error
//! frame carrying the frame's request id, and the connection lives.
//!
//! Zero copy: the encoder serializes straight into the caller's output buffer after a
//! placeholder header; the decoder validates payloads in place in its read buffer
//! (`rkyv` access with a depth-limited validator) and never deserializes. A payload that
//! arrives at an address not 8-aligned (a sender that does not pad) is copied once into a
//! scratch buffer first.

use std::num::NonZeroUsize;

use rkyv::{
    api::high::{HighDeserializer, HighSerializer, HighValidator},
    bytecheck::CheckBytes,
    rancor,
    ser::{allocator::ArenaHandle, Positional, Writer},
    util::AlignedVec,
    validation::{archive::ArchiveValidator, shared::SharedValidator, Validator},
    Deserialize, Portable, Serialize,
};

use super::error::{ErrorCode, ProtoError};
use super::messages::{
    ArchivedPeerFrame, ArchivedRequest, ArchivedResponse, ArchivedSnapshotAck,
    ArchivedSnapshotChunk, PeerFrame, Request, Response, SnapshotAck, SnapshotChunk,
};
use super::ArchivedProtoError;

pub const FRAME_LEN_OFFSET: usize = 0;
pub const FRAME_LEN_SIZE: usize = 4;
pub const FRAME_CRC_OFFSET: usize = FRAME_LEN_OFFSET + FRAME_LEN_SIZE;
pub const FRAME_CRC_SIZE: usize = 4;
pub const FRAME_REQUEST_ID_OFFSET: usize = FRAME_CRC_OFFSET + FRAME_CRC_SIZE;
pub const FRAME_REQUEST_ID_SIZE: usize = 8;
pub const FRAME_KIND_OFFSET: usize = FRAME_REQUEST_ID_OFFSET + FRAME_REQUEST_ID_SIZE;
pub const FRAME_KIND_SIZE: usize = 2;
pub const FRAME_FLAGS_OFFSET: usize = FRAME_KIND_OFFSET + FRAME_KIND_SIZE;
pub const FRAME_FLAGS_SIZE: usize = 2;
pub const FRAME_PAYLOAD_LEN_OFFSET: usize = FRAME_FLAGS_OFFSET + FRAME_FLAGS_SIZE;
pub const FRAME_PAYLOAD_LEN_SIZE: usize = 4;
/// Size of the fixed frame header; the payload starts here.
pub const FRAME_HEADER_LEN: usize = FRAME_PAYLOAD_LEN_OFFSET + FRAME_PAYLOAD_LEN_SIZE;
/// The crc covers the frame from here to its end.
pub const FRAME_CRC_START: usize = FRAME_REQUEST_ID_OFFSET;
/// Frames are padded to a multiple of this; payloads are validated at addresses aligned
/// to it; no archived payload type needs more.
pub const FRAME_ALIGN: usize = 8;
/// Default maximum frame size (header included).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 2 << 20;
/// Default initial size of a decoder's read buffer.
pub const DEFAULT_INITIAL_BUFFER_BYTES: usize = 64 << 10;
/// Maximum nesting of rkyv subtrees (vectors, strings, ...) in a payload: bounds the
/// validator's recursion (a hostile deeply nested Txn would otherwise overflow the
/// stack) and everything that walks a validated archive.
pub const MAX_ARCHIVE_DEPTH: usize = 64;

const _: () = assert!(FRAME_HEADER_LEN == 24);
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(FRAME_REQUEST_ID_OFFSET.is_multiple_of(8));
const _: () = assert!(DEFAULT_MAX_FRAME_BYTES <= u32::MAX as usize);
const _: () = assert!(std::mem::align_of::<ArchivedRequest>() <= FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<ArchivedResponse>() <= FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<ArchivedProtoError>() <= FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<ArchivedPeerFrame>() <= FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<ArchivedSnapshotChunk>() <= FRAME_ALIGN);
const _: () = assert!(std::mem::align_of::<ArchivedSnapshotAck>() <= FRAME_ALIGN);

/// What a frame carries. The value is the `kind` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    /// Client → server: [`Request`].
    Request = 1,
    /// Server → client: [`Response`].
    Response = 2,
    /// Either direction: [`ProtoError`], answering the frame with the same request id
    /// (0 when the error is about the connection, not one request).
    Error = 3,
    /// Peer → peer: [`PeerFrame`].
    Raft = 16,
    /// Peer → peer: [`SnapshotChunk`].
    SnapshotChunk = 17,
    /// Peer → peer: [`SnapshotAck`].
    SnapshotAck = 18,
}

impl FrameKind {
    pub fn from_u16(v: u16) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Error,
            16 => FrameKind::Raft,
            17 => FrameKind::SnapshotChunk,
            18 => FrameKind::SnapshotAck,
            _ => return None,
        })
    }
}

/// A message type that travels in a frame of kind `KIND`.
pub trait FramePayload {
    const KIND: FrameKind;
}
impl FramePayload for Request {
    const KIND: FrameKind = FrameKind::Request;
}
impl FramePayload for Response {
    const KIND: FrameKind = FrameKind::Response;
}
impl FramePayload for ProtoError {
    const KIND: FrameKind = FrameKind::Error;
}
impl FramePayload for PeerFrame {
    const KIND: FrameKind = FrameKind::Raft;
}
impl FramePayload for SnapshotChunk {
    const KIND: FrameKind = FrameKind::SnapshotChunk;
}
impl FramePayload for SnapshotAck {
    const KIND: FrameKind = FrameKind::SnapshotAck;
}

/// The rkyv writer used by [`encode_frame`]: appends to the output buffer, with
/// positions relative to the payload's start (so the archive's internal alignment does
/// not depend on where in the buffer the frame begins).
pub struct PayloadWriter<'b> {
    out: &'b mut Vec<u8>,
    base: usize,
}

impl Positional for PayloadWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.base
    }
}

impl<E> Writer<E> for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends one frame carrying `msg` to `out` and returns the frame's length. Nothing is
/// appended on error: `FrameTooLarge` when the frame would exceed `max_frame_bytes` (the
/// receiver's limit), `Internal` when serialization fails.
pub fn encode_frame<T>(
    out: &mut Vec<u8>,
    request_id: u64,
    msg: &T,
    max_frame_bytes: usize,
) -> Result<usize, ProtoError>
where
    T: FramePayload
        + for<'a, 'b> Serialize<HighSerializer<PayloadWriter<'b>, ArenaHandle<'a>, rancor::Error>>,
{
    let frame_start = out.len();
    out.resize(frame_start + FRAME_HEADER_LEN, 0);
    let base = out.len();
    let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(
        msg,
        PayloadWriter {
            out: &mut *out,
            base,
        },
    );
    if let Err(e) = written {
        out.truncate(frame_start);
        return Err(ProtoError::new(
            ErrorCode::Internal,
            format!("serializing a {:?} frame: {e}", T::KIND),
        ));
    }
    let payload_len = out.len() - base;
    let frame_len = (FRAME_HEADER_LEN + payload_len).next_multiple_of(FRAME_ALIGN);
    if frame_len > max_frame_bytes.min(u32::MAX as usize) {
        out.truncate(frame_start);
        return Err(ProtoError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "encoding a {:?} frame of {frame_len} bytes, over the limit of {max_frame_bytes}",
                T::KIND
            ),
        ));
    }
    out.resize(frame_start + frame_len, 0);
    let f = &mut out[frame_start..];
    put_u32(f, FRAME_LEN_OFFSET, frame_len as u32);
    f[FRAME_REQUEST_ID_OFFSET..FRAME_REQUEST_ID_OFFSET + 8]
        .copy_from_slice(&request_id.to_le_bytes());
    f[FRAME_KIND_OFFSET..FRAME_KIND_OFFSET + 2].copy_from_slice(&(T::KIND as u16).to_le_bytes());
    f[FRAME_FLAGS_OFFSET..FRAME_FLAGS_OFFSET + 2].copy_from_slice(&0u16.to_le_bytes());
    put_u32(f, FRAME_PAYLOAD_LEN_OFFSET, payload_len as u32);
    let crc = crc32fast::hash(&f[FRAME_CRC_START..]);
    put_u32(f, FRAME_CRC_OFFSET, crc);
    Ok(frame_len)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Validates `bytes` in place as an archived `T` (depth-limited), without
/// deserializing. `bytes` must start at an address aligned for `T`, or validation fails.
pub fn access_payload<T>(bytes: &[u8]) -> Result<&T, ProtoError>
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    let mut validator = Validator::new(
        ArchiveValidator::with_max_depth(bytes, NonZeroUsize::new(MAX_ARCHIVE_DEPTH)),
        SharedValidator::new(),
    );
    rkyv::api::access_with_context::<T, _, rancor::Error>(bytes, &mut validator).map_err(|e| {
        ProtoError::new(
            ErrorCode::InvalidMessage,
            format!(
                "payload of {} bytes is not a valid {}: {e}",
                bytes.len(),
                std::any::type_name::<T>()
            ),
        )
    })
}

/// Deserializes an archived value (only where an owned value is really needed).
pub fn deserialize<T, A>(archived: &A) -> Result<T, ProtoError>
where
    A: Deserialize<T, HighDeserializer<rancor::Error>>,
{
    rkyv::api::high::deserialize::<T, rancor::Error>(archived)
        .map_err(|e| ProtoError::new(ErrorCode::Internal, format!("deserializing: {e}")))
}

/// Which end of which connection a decoder serves: decides which kinds it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A server reading a client connection: accepts `Request`.
    Server,
    /// A client reading the server's answers: accepts `Response`, `Error`.
    Client,
    /// A peer connection: accepts `Raft`, `SnapshotChunk`, `SnapshotAck`, `Error`.
    Peer,
}

impl Endpoint {
    fn accepts(self, kind: FrameKind) -> bool {
        use FrameKind as K;
        match self {
            Endpoint::Server => kind == K::Request,
            Endpoint::Client => matches!(kind, K::Response | K::Error),
            Endpoint::Peer => {
                matches!(kind, K::Raft | K::SnapshotChunk | K::SnapshotAck | K::Error)
            }
        }
    }
}

/// Decoder settings.
#[derive(Clone, Copy, Debug)]
pub struct DecoderConfig {
    pub endpoint: Endpoint,
    /// Frames longer than this are refused (`FrameTooLarge`) before any allocation.
    pub max_frame_bytes: usize,
    /// The read buffer's initial size; it grows only to hold one admitted frame.
    pub initial_buffer_bytes: usize,
}

impl DecoderConfig {
    pub fn new(endpoint: Endpoint) -> Self {
        DecoderConfig {
            endpoint,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            initial_buffer_bytes: DEFAULT_INITIAL_BUFFER_BYTES,
        }
    }
}

/// A validated payload, borrowed from the decoder's buffer.
pub enum Message<'a> {
    Request(&'a ArchivedRequest),
    Response(&'a ArchivedResponse),
    Error(&'a ArchivedProtoError),
    Raft(&'a ArchivedPeerFrame),
    SnapshotChunk(&'a ArchivedSnapshotChunk),
    SnapshotAck(&'a ArchivedSnapshotAck),
}

impl Message<'_> {
    pub fn kind(&self) -> FrameKind {
        match self {
            Message::Request(_) => FrameKind::Request,
            Message::Response(_) => FrameKind::Response,
            Message::Error(_) => FrameKind::Error,
            Message::Raft(_) => FrameKind::Raft,
            Message::SnapshotChunk(_) => FrameKind::SnapshotChunk,
            Message::SnapshotAck(_) => FrameKind::SnapshotAck,
        }
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message::{:?}", self.kind())
    }
}

/// One decoded frame.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub request_id: u64,
    /// Size of the rkyv archive (what request-size limits count).
    pub payload_len: usize,
    pub message: Message<'a>,
}

/// A decoding failure. `request_id` is set when the frame itself was sound (crc ok): the
/// error is then about that request and is answered with an error frame; otherwise the
/// error is fatal and the connection must be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub request_id: Option<u64>,
    pub error: ProtoError,
}

impl DecodeError {
    /// The connection must be closed.
    pub fn is_fatal(&self) -> bool {
        self.error.is_fatal()
    }
    fn fatal(code: ErrorCode, message: String) -> Self {
        let error = ProtoError::new(code, message);
        debug_assert!(error.is_fatal());
        DecodeError {
            request_id: None,
            error,
        }
    }
}

/// Turns a byte stream into frames. Feed it with [`Decoder::read_buf`] +
/// [`Decoder::advance`] (read straight from a socket into its buffer) or
/// [`Decoder::feed`]; take frames with [`Decoder::next_frame`] until it returns
/// `Ok(None)`; at end of stream call [`Decoder::finish`].
pub struct Decoder {
    cfg: DecoderConfig,
    /// Initialized bytes; the unread stream is `buf[start..end]`.
    buf: AlignedVec<16>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]` (for error messages).
    stream_offset: u64,
    /// Holds a payload that arrived unaligned.
    scratch: AlignedVec<16>,
    /// Set by a fatal error: the decoder refuses everything after it.
    failed: Option<ProtoError>,
}

impl Decoder {
    pub fn new(cfg: DecoderConfig) -> Self {
        assert!(
            cfg.max_frame_bytes >= FRAME_HEADER_LEN,
            "max_frame_bytes under the header size"
        );
        let initial = cfg.initial_buffer_bytes.max(FRAME_HEADER_LEN);
        let mut buf = AlignedVec::with_capacity(initial);
        buf.resize(initial, 0);
        Decoder {
            cfg,
            buf,
            start: 0,
            end: 0,
            stream_offset: 0,
            scratch: AlignedVec::new(),
            failed: None,
        }
    }

    /// Bytes currently allocated for the read buffer.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes the pending frame still needs (at least 1 byte while nothing is known).
    fn bytes_wanted(&self) -> usize {
        let avail = self.end - self.start;
        if avail < FRAME_LEN_SIZE {
            return FRAME_HEADER_LEN - avail;
        }
        let len = get_u32(&self.buf, self.start + FRAME_LEN_OFFSET) as usize;
        if !(FRAME_HEADER_LEN..=self.cfg.max_frame_bytes).contains(&len) {
            // next_frame reports it; never allocate for a length we refuse.
            return 1;
        }
        len.saturating_sub(avail).max(1)
    }

    /// Moves the unread bytes to the front; gives a buffer grown for a big frame back
    /// once it is empty again.
    fn compact(&mut self) {
        let initial = self.cfg.initial_buffer_bytes.max(FRAME_HEADER_LEN);
        if self.start == self.end && self.buf.len() > initial {
            let mut buf = AlignedVec::with_capacity(initial);
            buf.resize(initial, 0);
            self.buf = buf;
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Space to read into (then call [`Decoder::advance`] with the count read). Its size
    /// covers at least the rest of the pending frame, whose length was checked against
    /// the limit first: the buffer never grows beyond one admitted frame.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let wanted = self.bytes_wanted();
        let free = self.buf.len() - self.end;
        if free < wanted || self.start >= self.buf.len() / 2 {
            self.compact();
        }
        let free = self.buf.len() - self.end;
        if free < wanted {
            let new_len = self.end + wanted;
            debug_assert!(new_len <= self.cfg.max_frame_bytes.max(self.cfg.initial_buffer_bytes));
            self.buf.reserve_exact(new_len - self.buf.len());
            self.buf.resize(new_len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the last [`Decoder::read_buf`] as filled.
    pub fn advance(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "advance past the read buffer"
        );
        self.end += n;
    }

    /// Copies `bytes` into the buffer (for callers that already hold the bytes; the
    /// buffer grows by what is fed).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        if self.buf.len() - self.end < bytes.len() {
            let new_len = self.end + bytes.len();
            self.buf.reserve_exact(new_len - self.buf.len());
            self.buf.resize(new_len, 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// At end of stream: `Ok` if the stream ended on a frame boundary, else the error
    /// (`BadFrame` naming how much of which frame arrived, or the earlier fatal error).
    pub fn finish(&self) -> Result<(), ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(());
        }
        let total = if avail >= FRAME_LEN_SIZE {
            format!("{}", get_u32(&self.buf, self.start))
        } else {
            "unknown".to_string()
        };
        Err(ProtoError::new(
            ErrorCode::BadFrame,
            format!(
                "stream ended mid-frame: {avail} bytes of a frame of {total} bytes at stream offset {}",
                self.stream_offset
            ),
        ))
    }

    fn fail(&mut self, code: ErrorCode, message: String) -> DecodeError {
        let e = DecodeError::fatal(code, message);
        self.failed = Some(e.error.clone());
        e
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After a fatal error
    /// every call returns that error again.
    pub fn next_frame(&mut self) -> Result<Option<Inbound<'_>>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(DecodeError {
                request_id: None,
                error: e.clone(),
            });
        }
        let avail = self.end - self.start;
        if avail < FRAME_LEN_SIZE {
            return Ok(None);
        }
        let at = self.stream_offset;
        let len = get_u32(&self.buf, self.start + FRAME_LEN_OFFSET) as usize;
        if len < FRAME_HEADER_LEN {
            return Err(self.fail(
                ErrorCode::BadFrame,
                format!("frame at stream offset {at}: length {len} is under the {FRAME_HEADER_LEN}-byte header"),
            ));
        }
        if len > self.cfg.max_frame_bytes {
            return Err(self.fail(
                ErrorCode::FrameTooLarge,
                format!(
                    "frame at stream offset {at}: length {len} exceeds the maximum of {}",
                    self.cfg.max_frame_bytes
                ),
            ));
        }
        if avail < len {
            return Ok(None);
        }
        let fs = self.start;
        let frame = &self.buf[fs..fs + len];
        let want_crc = get_u32(frame, FRAME_CRC_OFFSET);
        let got_crc = crc32fast::hash(&frame[FRAME_CRC_START..]);
        if want_crc != got_crc {
            return Err(self.fail(
                ErrorCode::BadChecksum,
                format!("frame at stream offset {at} ({len} bytes): crc32 field {want_crc:#010x}, bytes give {got_crc:#010x}"),
            ));
        }
        let request_id = u64::from_le_bytes(
            frame[FRAME_REQUEST_ID_OFFSET..FRAME_REQUEST_ID_OFFSET + 8]
                .try_into()
                .expect("8 bytes"),
        );
        let kind_raw = u16::from_le_bytes([frame[FRAME_KIND_OFFSET], frame[FRAME_KIND_OFFSET + 1]]);
        let flags = u16::from_le_bytes([frame[FRAME_FLAGS_OFFSET], frame[FRAME_FLAGS_OFFSET + 1]]);
        let payload_len = get_u32(frame, FRAME_PAYLOAD_LEN_OFFSET) as usize;
        if flags != 0 {
            return Err(self.fail(
                ErrorCode::BadFrame,
                format!("frame at stream offset {at}: reserved flags {flags:#06x} set"),
            ));
        }
        let room = len - FRAME_HEADER_LEN;
        if payload_len > room || room - payload_len >= FRAME_ALIGN {
            return Err(self.fail(
                ErrorCode::BadFrame,
                format!("frame at stream offset {at}: payload_len {payload_len} does not fit frame length {len} (header {FRAME_HEADER_LEN}, padding < {FRAME_ALIGN})"),
            ));
        }
        // The frame is sound: consume it whatever its content.
        self.start += len;
        self.stream_offset += len as u64;
        let range = fs + FRAME_HEADER_LEN..fs + FRAME_HEADER_LEN + payload_len;
        let non_fatal = |code, message| DecodeError {
            request_id: Some(request_id),
            error: ProtoError::new(code, message),
        };
        let Some(kind) = FrameKind::from_u16(kind_raw) else {
            return Err(non_fatal(
                ErrorCode::UnknownRequest,
                format!("frame at stream offset {at}: unknown kind {kind_raw}"),
            ));
        };
        let payload: &[u8] =
            if (self.buf.as_ptr() as usize + range.start).is_multiple_of(FRAME_ALIGN) {
                &self.buf[range]
            } else {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.buf[range]);
                &self.scratch[..]
            };
        let with_ctx = |e: ProtoError| DecodeError {
            request_id: Some(request_id),
            error: ProtoError::new(
                e.code,
                format!("frame at stream offset {at}, kind {kind:?}: {}", e.message),
            ),
        };
        let message = match kind {
            FrameKind::Request => Message::Request(access_payload(payload).map_err(with_ctx)?),
            FrameKind::Response => Message::Response(access_payload(payload).map_err(with_ctx)?),
            FrameKind::Error => Message::Error(access_payload(payload).map_err(with_ctx)?),
            FrameKind::Raft => Message::Raft(access_payload(payload).map_err(with_ctx)?),
            FrameKind::SnapshotChunk => {
                Message::SnapshotChunk(access_payload(payload).map_err(with_ctx)?)
            }
            FrameKind::SnapshotAck => {
                Message::SnapshotAck(access_payload(payload).map_err(with_ctx)?)
            }
        };
        if !self.cfg.endpoint.accepts(kind) {
            return Err(non_fatal(
                ErrorCode::UnknownRequest,
                format!(
                    "frame at stream offset {at}: kind {kind:?} is not accepted by a {:?} endpoint",
                    self.cfg.endpoint
                ),
            ));
        }
        Ok(Some(Inbound {
            request_id,
            payload_len,
            message,
        }))
    }
}
