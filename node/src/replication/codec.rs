//! The sync protocol's wire: each message is one frame, a 4-byte big-endian length then that
//! many bytes of `codec::encode(SyncMessage)`. A frame over [`MAX_FRAME_BYTES`] is refused
//! before it is read, and a frame that does not decode strictly is an error.
//!
//! An unreadable *answer* fails the request (libp2p reports it). An unreadable *request* comes
//! up as [`Frame::Unreadable`] instead: libp2p's request-response drops a request its codec
//! cannot read without telling anyone, and the node must know, to penalise the peer.

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
}

impl From<SyncMessage> for Frame {
    fn from(message: SyncMessage) -> Self {
        Frame::Message(message)
    }
}

/// Reads one frame and decodes it.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<SyncMessage> {
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
    SyncMessage::from_bytes(&bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
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
        match read_frame(io).await {
            Ok(message) => Ok(Frame::Message(message)),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                Ok(Frame::Unreadable(err.to_string()))
            }
            Err(err) => Err(err),
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
            Frame::Unreadable(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an unreadable frame is never sent",
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

        // A truncated frame.
        let err = read_frame(&mut &wire[..wire.len() - 1])
            .await
            .expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
