//! The byte stream under a connection: plain TCP, or TLS over TCP.
//!
//! Frames go through either the same way. Transfers of values take a faster path on plain TCP
//! (`sendfile` and `splice`: the kernel moves the bytes); over TLS every byte passes through
//! user space to be encrypted or decrypted, so they are written from and read into the value's
//! memory directly ([`crate::transfer`]).
use crate::tls::Tls;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at once under TLS. rustls asks for 4 KiB at a time; without this
/// buffer a 1 GiB value cost 262,144 `recv` calls and as many wake-ups.
pub const TLS_READ_BUFFER_BYTES: usize = 1 << 20;
/// Encrypted bytes rustls may hold before a write waits for the socket (rustls' default is
/// 64 KiB: a value's 4 MiB pieces then went out in 64 small `writev` rounds).
pub const TLS_SEND_BUFFER_BYTES: usize = 4 << 20;

/// The socket under TLS: reads buffered ([`TLS_READ_BUFFER_BYTES`]), writes straight through.
pub type TlsSocket = BufReader<TcpStream>;

pub fn tls_socket(tcp: TcpStream) -> TlsSocket {
    BufReader::with_capacity(TLS_READ_BUFFER_BYTES, tcp)
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

/// A TLS connection, and what it checks its peer against while it lasts.
pub struct TlsConn {
    io: tokio_rustls::TlsStream<TlsSocket>,
    tls: Arc<Tls>,
    /// The CA bundle generation the peer's certificate was last checked against.
    checked: u64,
}

impl TlsConn {
    /// `Err` once the CA bundle changed and the peer's certificate no longer chains to it
    /// (its CA was removed: revoked). Checked at each read and write: one atomic load unless
    /// the bundle changed.
    fn still_trusted(&mut self) -> std::io::Result<()> {
        let generation = self.tls.generation();
        if generation == self.checked {
            return Ok(());
        }
        self.checked = generation;
        let chain = match &self.io {
            tokio_rustls::TlsStream::Client(c) => c.get_ref().1.peer_certificates(),
            tokio_rustls::TlsStream::Server(c) => c.get_ref().1.peer_certificates(),
        };
        if chain.is_some_and(|c| self.tls.still_trusts(c)) {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the peer's TLS certificate is no longer trusted (its CA was removed from the CA \
             bundle): connection closed",
        ))
    }
}

impl Stream {
    /// A TLS stream, with rustls allowed [`TLS_SEND_BUFFER_BYTES`] of encrypted bytes; its
    /// peer is checked again whenever `tls` reloads its CA bundle.
    pub fn tls(mut s: tokio_rustls::TlsStream<TlsSocket>, tls: Arc<Tls>) -> Stream {
        match &mut s {
            tokio_rustls::TlsStream::Client(c) => {
                c.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES))
            }
            tokio_rustls::TlsStream::Server(c) => {
                c.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER_BYTES))
            }
        }
        let checked = tls.generation();
        Stream::Tls(Box::new(TlsConn {
            io: s,
            tls,
            checked,
        }))
    }
}

impl Stream {
    /// The TCP socket, when nothing sits between it and the connection's bytes.
    pub fn plain(&mut self) -> Option<&mut TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Tls(s) => s.io.get_ref().0.get_ref().peer_addr(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => {
                s.still_trusted()?;
                Pin::new(&mut s.io).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => {
                s.still_trusted()?;
                Pin::new(&mut s.io).poll_write(cx, buf)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => {
                s.still_trusted()?;
                Pin::new(&mut s.io).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut s.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut s.io).poll_shutdown(cx),
        }
    }
}
