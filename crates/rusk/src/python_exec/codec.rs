//! The pipe codec of an executor ([`ExecutorCodec`]): the frames of the module doc's protocol.
use super::*;

const HEADER_LEN: usize = 13;
/// Size of a blob descriptor in a `T` frame: kind, fd, offset, length.
const BLOB_DESCRIPTOR_LEN: usize = 24;

// === impl ExecutorCodec ===

/// The frames of an executor's pipes (see the module doc): decodes what an executor writes,
/// encodes what the worker sends it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecutorCodec;

/// A frame from an executor, undecoded: its kind, the task id, the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub kind: u8,
    pub id: u64,
    pub body: Bytes,
}

/// What the worker sends an executor.
#[derive(Clone, Debug)]
pub enum ToExecutor {
    /// `T`: the payload inline; each input inline, or named by its fd if it is a whole
    /// shared-memory segment (the executor maps it in place).
    Task {
        id: u64,
        payload: Bytes,
        inputs: Vec<Bytes>,
        /// Preceded by `K` (`claim: u32 BE`): the executor claims the task before it starts it.
        claim: Option<u32>,
    },
    /// `C`.
    Cancel(u64),
    /// `F`: the result segment of task `id` is mapped; close it.
    ResultMapped(u64),
    /// `G`: the answer to task `id`'s `A`: a segment of the worker (`fd`, `len`) to write its
    /// result into, or none (the executor makes its own).
    Grant {
        id: u64,
        segment: Option<(u32, u64)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading its output: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes")]
    TooLarge(usize),
}

impl Decoder for ExecutorCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = src[0];
        let id = u64::from_be_bytes(src[1..9].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(src[9..13].try_into().expect("4 bytes")) as usize;
        if len > MAX_EXECUTOR_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(HEADER_LEN + len);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            kind,
            id,
            body: frame.freeze(),
        }))
    }
}

impl Encoder<ToExecutor> for ExecutorCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: ToExecutor, dst: &mut BytesMut) -> std::io::Result<()> {
        let (id, payload, inputs) = match item {
            ToExecutor::Cancel(id) => {
                put_header(dst, b'C', id, 0);
                return Ok(());
            }
            ToExecutor::ResultMapped(id) => {
                put_header(dst, b'F', id, 0);
                return Ok(());
            }
            ToExecutor::Grant { id, segment } => {
                match segment {
                    Some((fd, len)) => {
                        put_header(dst, b'G', id, 13);
                        dst.put_u8(1);
                        dst.put_u32(fd);
                        dst.put_u64(len);
                    }
                    None => {
                        put_header(dst, b'G', id, 1);
                        dst.put_u8(0);
                    }
                }
                return Ok(());
            }
            ToExecutor::Task {
                id,
                payload,
                inputs,
                claim,
            } => {
                if let Some(c) = claim {
                    put_header(dst, b'K', id, 4);
                    dst.put_u32(c);
                }
                (id, payload, inputs)
            }
        };
        let blobs: Vec<(&Bytes, Option<i32>)> = std::iter::once((&payload, None))
            .chain(inputs.iter().map(|i| (i, segment::fd_of(i))))
            .collect();
        let inline: usize = blobs
            .iter()
            .filter(|(_, fd)| fd.is_none())
            .map(|(b, _)| b.len())
            .sum();
        let body_len = 4 + BLOB_DESCRIPTOR_LEN * blobs.len() + inline;
        dst.reserve(HEADER_LEN + body_len);
        put_header(dst, b'T', id, u32::try_from(body_len).unwrap_or(u32::MAX));
        dst.put_u32(blobs.len() as u32);
        for (b, fd) in &blobs {
            dst.put_u8(u8::from(fd.is_some()));
            dst.put_bytes(0, 3);
            dst.put_u32(fd.unwrap_or(0) as u32);
            dst.put_u64(0);
            dst.put_u64(b.len() as u64);
        }
        for (b, _) in blobs.iter().filter(|(_, fd)| fd.is_none()) {
            dst.extend_from_slice(b);
        }
        Ok(())
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, id: u64, len: u32) {
    dst.reserve(HEADER_LEN);
    dst.put_u8(kind);
    dst.put_u64(id);
    dst.put_u32(len);
}

#[cfg(test)]
mod tests {
    //! The pipe codec.
    use super::*;

    fn header(kind: u8, id: u64, len: u32) -> Vec<u8> {
        let mut h = vec![kind];
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn the_codec_decodes_frames_split_anywhere() {
        let mut wire = header(b'P', 0, 0);
        wire.extend(header(b'S', 7, 0));
        wire.extend(header(b'R', 7, 4));
        wire.extend(b"\0abc");
        let mut codec = ExecutorCodec;
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // One byte at a time: a frame is complete only when all of it is there.
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert!(buf.is_empty());
        let frame = |kind, id, body: &'static [u8]| Frame {
            kind,
            id,
            body: Bytes::from_static(body),
        };
        assert_eq!(
            frames,
            vec![
                frame(b'P', 0, b""),
                frame(b'S', 7, b""),
                frame(b'R', 7, b"\0abc")
            ]
        );
    }

    #[test]
    fn the_codec_refuses_a_frame_over_the_limit_from_its_header() {
        let mut buf = BytesMut::from(&header(b'E', 1, MAX_EXECUTOR_FRAME as u32 + 1)[..]);
        let e = ExecutorCodec.decode(&mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("a frame of {} bytes", MAX_EXECUTOR_FRAME + 1)
        );
    }

    #[test]
    fn the_codec_encodes_tasks_with_blob_descriptors_and_bare_cancels() {
        let mut dst = BytesMut::new();
        ExecutorCodec
            .encode(
                ToExecutor::Task {
                    id: 9,
                    payload: Bytes::from_static(b"ab"),
                    inputs: vec![Bytes::from_static(b"c")],
                    claim: Some(3),
                },
                &mut dst,
            )
            .unwrap();
        let mut want = header(b'K', 9, 4);
        want.extend(3u32.to_be_bytes());
        want.extend(header(b'T', 9, 4 + 2 * 24 + 3));
        want.extend(2u32.to_be_bytes());
        for len in [2u64, 1] {
            want.extend([0, 0, 0, 0]); // inline, padding
            want.extend(0u32.to_be_bytes()); // fd
            want.extend(0u64.to_be_bytes()); // offset
            want.extend(len.to_be_bytes());
        }
        want.extend(b"abc");
        assert_eq!(&dst[..], &want[..]);
        let mut dst = BytesMut::new();
        ExecutorCodec
            .encode(ToExecutor::Cancel(5), &mut dst)
            .unwrap();
        ExecutorCodec
            .encode(ToExecutor::ResultMapped(6), &mut dst)
            .unwrap();
        let mut want = header(b'C', 5, 0);
        want.extend(header(b'F', 6, 0));
        assert_eq!(&dst[..], &want[..]);
    }
}
