//! Where connections enter: the accept loop in front of the gRPC server. It bounds how many
//! connections are open at once, closes a connection that has not sent the HTTP/2 preface (and
//! finished its TLS handshake) in time, and speaks TLS with the configuration in force when the
//! connection arrived, so certificates can be replaced while the server runs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// The bytes every HTTP/2 connection starts with.
const HTTP2_PREFACE_LEN: usize = 24;

/// How connections are bounded.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// From accept to the end of the HTTP/2 preface (the TLS handshake included).
    pub handshake_timeout: Duration,
}

/// The TLS configuration new connections get; replaced on reload.
pub type TlsSlot = Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>;

/// What the server knows of a connection, in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The subject of the verified client certificate (mTLS), as `CN=…,O=…`.
    pub client_subject: Option<Arc<str>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    /// Bytes of the HTTP/2 preface still to come; the deadline is dropped once it is in.
    preface_left: usize,
    handshake_deadline: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

/// Accepts on `listener` until the returned stream is dropped.
pub fn incoming(listener: TcpListener, limits: ConnectionLimits, tls: TlsSlot) -> Incoming {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(16);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot,
                _ = tx.closed() => return,
            };
            let Ok(slot) = slot else { return };
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            // Nagle would hold a stream's last frames until the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let deadline = Instant::now() + limits.handshake_timeout;
            let config = tls.read().unwrap_or_else(|e| e.into_inner()).clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let conn = match config {
                    None => Ok(Conn::new(Io::Plain(stream), remote, None, deadline, slot)),
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let subject = client_subject(&tls);
                                Ok(Conn::new(
                                    Io::Tls(Box::new(tls)),
                                    remote,
                                    subject,
                                    deadline,
                                    slot,
                                ))
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                let _ = tx.send(conn).await;
            });
        }
    });
    Incoming(rx)
}

fn client_subject(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Arc<str>> {
    let (_, session) = tls.get_ref();
    let cert = session.peer_certificates()?.first()?;
    crate::callers::certificate_subject(cert.as_ref()).map(Arc::from)
}

impl Conn {
    fn new(
        io: Io,
        remote: SocketAddr,
        client_subject: Option<Arc<str>>,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Conn {
            io,
            info: ConnInfo {
                remote: Some(remote),
                client_subject,
            },
            preface_left: HTTP2_PREFACE_LEN,
            handshake_deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            _slot: slot,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.handshake_deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            )));
        }
        let before = buf.filled().len();
        match &mut this.io {
            Io::Plain(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
            Io::Tls(s) => ready!(Pin::new(s.as_mut()).poll_read(cx, buf))?,
        }
        if this.preface_left > 0 {
            let got = buf.filled().len() - before;
            this.preface_left = this.preface_left.saturating_sub(got);
            if this.preface_left == 0 {
                this.handshake_deadline = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The accepted connections as a stream (what tonic's server takes); dropping it stops accepting.
pub struct Incoming(mpsc::Receiver<io::Result<Conn>>);

impl futures_util::Stream for Incoming {
    type Item = io::Result<Conn>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
