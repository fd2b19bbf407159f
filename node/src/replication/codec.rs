//! The sync protocol's wire: each message is one frame, a 4-byte big-endian length then that
//! many bytes of `codec::encode(SyncMessage)`. A frame over [`MAX_FRAME_BYTES`] is refused
//! before it is read, and a frame that does not decode strictly is an error.
//!
//! An unreadable *answer* fails the request (libp2p reports it). An unreadable *request* comes
//! up as [`Frame::Unreadable`] instead: libp2p's request-response drops a request its codec
//! cannot read without telling anyone, and the node must know, to penalise the peer. A request
//! whose kind is newer than this build ([`Frame::Newer`]: a tag past the last it knows) is
//! not an offence: a newer node may ask it, and is answered `Refused`.

use std::io;

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use threadline_protocol::sync::{SyncMessage, MAX_FRAME_BYTES};

/// The request-response codec of the sync protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

/// A request as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A well-formed message.
    Message(SyncMessage),
    /// A frame that is oversize or does not decode (never sent; only read).
    Unreadable(String),
    /// A request of a kind this build does not know yet, by its tag (never sent; only read).
    Newer(u8),
}

/// The tag of the last [`SyncMessage`] variant this build knows (`NoBlob`).
pub const LAST_KNOWN_TAG: u8 = 15;

impl From<SyncMessage> for Frame {
    fn from(message: SyncMessage) -> Self {
        Frame::Message(message)
    }
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<SyncMessage> {
    let bytes = read_frame_bytes(io).await?;
    SyncMessage::from_bytes(&bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Reads one frame's bytes (at most [`MAX_FRAME_BYTES`]).
async fn read_frame_bytes<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a sync frame of {len} bytes; at most {MAX_FRAME_BYTES}"),
        ));
    }
    let mut bytes = vec![0u8; len];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Encodes a message and writes it as one frame.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    message: &SyncMessage,
) -> io::Result<()> {
    let bytes = message
        .to_bytes()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|_| bytes.len() <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a sync frame of {} bytes; at most {MAX_FRAME_BYTES}",
                    bytes.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = SyncMessage;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = match read_frame_bytes(io).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                return Ok(Frame::Unreadable(err.to_string()))
            }
            Err(err) => return Err(err),
        };
        match SyncMessage::from_bytes(&bytes) {
            Ok(message) => Ok(Frame::Message(message)),
            // The message's own tag (a one-byte varint below 251) is past the last known one.
            Err(threadline_protocol::codec::DecodeError::UnknownVariant { .. })
                if bytes
                    .first()
                    .is_some_and(|tag| *tag > LAST_KNOWN_TAG && *tag < 251) =>
            {
                Ok(Frame::Newer(bytes[0]))
            }
            Err(err) => Ok(Frame::Unreadable(err.to_string())),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            Frame::Message(message) => write_frame(io, &message).await,
            Frame::Unreadable(_) | Frame::Newer(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only messages are sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_or_garbage_frames_are_errors() {
        let message = SyncMessage::Summary { scopes: Vec::new() };
        let mut wire = Vec::new();
        write_frame(&mut wire, &message).await.expect("written");
        let mut reader = wire.as_slice();
        assert_eq!(read_frame(&mut reader).await.expect("read"), message);

        // A length over the limit is refused before anything is read or allocated.
        let mut oversize = u32::try_from(MAX_FRAME_BYTES + 1)
            .expect("fits")
            .to_be_bytes()
            .to_vec();
        oversize.extend_from_slice(&[0u8; 16]);
        let err = read_frame(&mut oversize.as_slice())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Bytes that are not a sync message.
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read_frame(&mut garbage.as_slice())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // The last known tag is the last variant's.
        let last = SyncMessage::NoBlob {
            blob: threadline_protocol::id::BlobHash::of(b""),
        };
        assert_eq!(last.to_bytes().expect("encodes")[0], LAST_KNOWN_TAG);

        // A request newer than this build, and one with a known tag but garbage inside.
        let mut codec = SyncCodec;
        let protocol = StreamProtocol::new(super::super::SYNC_PROTOCOL);
        let mut newer = 1u32.to_be_bytes().to_vec();
        newer.push(LAST_KNOWN_TAG + 1);
        let frame = libp2p::request_response::Codec::read_request(
            &mut codec,
            &protocol,
            &mut futures_util::io::Cursor::new(newer),
        )
        .await
        .expect("read");
        assert_eq!(frame, Frame::Newer(LAST_KNOWN_TAG + 1));
        let mut bad_scope = 2u32.to_be_bytes().to_vec();
        bad_scope.extend_from_slice(&[2, 9]); // Want { scope: tag 9 }
        let frame = libp2p::request_response::Codec::read_request(
            &mut codec,
            &protocol,
            &mut futures_util::io::Cursor::new(bad_scope),
        )
        .await
        .expect("read");
        assert!(matches!(frame, Frame::Unreadable(_)), "{frame:?}");

        // A truncated frame.
        let err = read_frame(&mut &wire[..wire.len() - 1])
            .await
            .expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
