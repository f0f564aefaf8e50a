//! How long a client may keep a connection of the local server busy.
//!
//! Each connection's socket is wrapped in [`Watched`], which fails a read that waits past the
//! deadline of the connection's current phase ([`Cycle`]): a request's line and headers must
//! be in within the header timeout, and a kept-alive connection may wait the idle timeout for
//! its next request. A write the client takes nothing of for the idle timeout fails too. The
//! body's deadline is kept by the service, which reads the body.
//!
//! hyper's own `header_read_timeout` cannot do this: it also runs while a kept-alive
//! connection waits for its next request, so the idle time could never exceed the head's.
//!
//! [`Crowding`] is how the accept loop, holding a connection it has no slot for, asks the
//! idle kept-alive connections to close and make room.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

/// The time limits of every connection (from the configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// For a request's line and headers.
    pub(crate) header: Duration,
    /// For a request's body, once its head is in.
    pub(crate) body: Duration,
    /// For a kept-alive connection's next request, and for the client to take any of an answer.
    pub(crate) idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request's head is due by the deadline (a fresh connection, or a kept-alive one whose
    /// next request has begun to arrive).
    Head { deadline: Instant },
    /// Kept alive after an answer, with no byte of a next request yet.
    Idle { deadline: Instant },
    /// A request's head is in: its body has a deadline of its own, and none applies to reads
    /// while its handler runs.
    Busy,
}

/// Where one connection is in its request–answer cycle: shared by its socket, which sees bytes
/// arrive, and its service, which sees requests start and answers get ready.
#[derive(Debug)]
pub(crate) struct Cycle {
    phase: Mutex<Phase>,
    limits: Limits,
}

impl Cycle {
    /// A connection just accepted: its first request's head is due within the header timeout.
    pub(crate) fn new(limits: Limits) -> Arc<Cycle> {
        Arc::new(Cycle {
            phase: Mutex::new(Phase::Head {
                deadline: Instant::now() + limits.header,
            }),
            limits,
        })
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
    }

    /// hyper has parsed a request's head and handed it to the service.
    pub(crate) fn request_started(&self) {
        self.set(Phase::Busy);
    }

    /// The service has its answer: from now the connection waits for a next request.
    pub(crate) fn answer_ready(&self) {
        self.set(Phase::Idle {
            deadline: Instant::now() + self.limits.idle,
        });
    }

    /// Bytes came in: on an idle connection they begin a request, whose head is now due.
    fn bytes_arrived(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                deadline: Instant::now() + self.limits.header,
            };
        }
    }
}

/// Raised while the accept loop holds a new connection it has no slot for.
#[derive(Debug, Default)]
pub(crate) struct Crowding {
    waiting: AtomicBool,
    notify: Arc<Notify>,
}

impl Crowding {
    /// A connection waits for a slot: idle connections close (now, or as soon as they go idle).
    pub(crate) fn press(&self) {
        self.waiting.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The waiting connection has its slot.
    pub(crate) fn relieve(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }
}

/// A connection's socket, with the read and write deadlines of its [`Cycle`].
pub(crate) struct Watched<S> {
    stream: S,
    cycle: Arc<Cycle>,
    crowding: Arc<Crowding>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    /// While idle: the wake-up for [`Crowding::press`].
    crowded: Option<Pin<Box<OwnedNotified>>>,
}

impl<S> Watched<S> {
    pub(crate) fn new(stream: S, cycle: Arc<Cycle>, crowding: Arc<Crowding>) -> Self {
        let now = Instant::now();
        Watched {
            stream,
            cycle,
            crowding,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            write_stalled: false,
            crowded: None,
        }
    }

    /// Whether this idle connection should give its slot to a waiting one. The wake-up is
    /// registered before the flag is read, so a press in between is not missed.
    fn should_give_way(&mut self, cx: &mut Context<'_>) -> bool {
        let crowding = &self.crowding;
        let notified = self
            .crowded
            .get_or_insert_with(|| Box::pin(Arc::clone(&crowding.notify).notified_owned()));
        notified.as_mut().enable();
        if crowding.waiting.load(Ordering::SeqCst) || notified.as_mut().poll(cx).is_ready() {
            self.crowded = None;
            return true;
        }
        false
    }

    /// Fails a write the client has taken nothing of for the idle timeout: a client that stops
    /// reading must not hold its slot forever.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stalled = false;
            return polled;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            self.write_timer
                .as_mut()
                .reset(Instant::now() + self.cycle.limits.idle);
        }
        timed_out(
            &mut self.write_timer,
            cx,
            "the client read nothing of the answer in time",
        )
    }
}

/// `TimedOut`, saying `why`, once `timer` fires; pending until then (the timer wakes the task).
fn timed_out<T>(
    timer: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
    why: &'static str,
) -> Poll<io::Result<T>> {
    timer
        .as_mut()
        .poll(cx)
        .map(|()| Err(io::Error::new(io::ErrorKind::TimedOut, why)))
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.cycle.bytes_arrived();
                this.crowded = None;
            }
            return Poll::Ready(result);
        }
        let deadline = match this.cycle.phase() {
            Phase::Busy => return Poll::Pending,
            Phase::Head { deadline } => deadline,
            Phase::Idle { deadline } => {
                if this.should_give_way(cx) {
                    // Read as the end of the stream: hyper closes an idle connection quietly.
                    return Poll::Ready(Ok(()));
                }
                deadline
            }
        };
        if this.read_timer.deadline() != deadline {
            this.read_timer.as_mut().reset(deadline);
        }
        timed_out(
            &mut this.read_timer,
            cx,
            "the client sent no request in time",
        )
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.guard_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.guard_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.guard_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.guard_write(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_millis(200),
        body: Duration::from_millis(200),
        idle: Duration::from_millis(500),
    };

    /// A client end and the server's watched end of one connection.
    fn connection(
        buffer: usize,
    ) -> (
        DuplexStream,
        Watched<DuplexStream>,
        Arc<Cycle>,
        Arc<Crowding>,
    ) {
        let crowding = Arc::new(Crowding::default());
        let (client, server, cycle) = connection_in(&crowding, buffer);
        (client, server, cycle, crowding)
    }

    /// The same, among the connections of `crowding`'s server.
    fn connection_in(
        crowding: &Arc<Crowding>,
        buffer: usize,
    ) -> (DuplexStream, Watched<DuplexStream>, Arc<Cycle>) {
        let (client, server) = tokio::io::duplex(buffer);
        let cycle = Cycle::new(LIMITS);
        let watched = Watched::new(server, Arc::clone(&cycle), Arc::clone(crowding));
        (client, watched, cycle)
    }

    /// Reads until an error or the end; what ended it and when.
    async fn read_until_stopped(server: &mut Watched<DuplexStream>) -> (io::Result<()>, Duration) {
        let started = std::time::Instant::now();
        let mut chunk = [0u8; 64];
        loop {
            match server.read(&mut chunk).await {
                Ok(0) => return (Ok(()), started.elapsed()),
                Ok(_) => {}
                Err(e) => return (Err(e), started.elapsed()),
            }
        }
    }

    #[tokio::test]
    async fn a_head_is_due_within_the_header_timeout_however_it_trickles() {
        let (mut client, mut server, _cycle, _crowding) = connection(1024);
        let trickle = tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let (result, after) = read_until_stopped(&mut server).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(
            after >= Duration::from_millis(150) && after < Duration::from_secs(2),
            "{after:?}"
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_waits_the_idle_timeout_and_its_next_head_the_header_timeout() {
        let (mut client, mut server, cycle, _crowding) = connection(1024);
        cycle.request_started();
        cycle.answer_ready();
        let (result, after) = read_until_stopped(&mut server).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(
            after >= Duration::from_millis(450),
            "idle for only {after:?}"
        );

        // A first byte on an idle connection starts a head, due within the header timeout.
        cycle.answer_ready();
        client.write_all(b"G").await.unwrap();
        let (result, after) = read_until_stopped(&mut server).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(
            after < Duration::from_millis(450),
            "the head took the idle time: {after:?}"
        );
    }

    #[tokio::test]
    async fn no_read_deadline_applies_while_a_request_is_handled() {
        let (_client, mut server, cycle, _crowding) = connection(1024);
        cycle.request_started();
        let mut chunk = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_millis(700), server.read(&mut chunk)).await;
        assert!(read.is_err(), "a read failed while busy: {read:?}");
    }

    #[tokio::test]
    async fn idle_connections_give_way_to_a_connection_waiting_for_a_slot() {
        let (_client, mut server, cycle, crowding) = connection(1024);
        cycle.answer_ready();
        let press = tokio::spawn({
            let crowding = Arc::clone(&crowding);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                crowding.press();
            }
        });
        let (result, after) = read_until_stopped(&mut server).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            after < Duration::from_millis(400),
            "gave way after {after:?}"
        );
        press.await.unwrap();

        // One that goes idle while a connection still waits gives way at once; once the wait
        // is over, idle connections stay until the idle timeout.
        let (_client, mut server, cycle) = connection_in(&crowding, 1024);
        cycle.answer_ready();
        let (result, after) = read_until_stopped(&mut server).await;
        assert!(
            result.is_ok() && after < Duration::from_millis(100),
            "{result:?} {after:?}"
        );
        crowding.relieve();
        let (_client, mut server, cycle) = connection_in(&crowding, 1024);
        cycle.answer_ready();
        let (result, _) = read_until_stopped(&mut server).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_write_the_client_takes_nothing_of_fails_at_the_idle_timeout() {
        let (_client, mut server, _cycle, _crowding) = connection(64);
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(Duration::from_secs(5), server.write_all(&[b'x'; 4096]))
            .await
            .expect("the stalled write ends");
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );

        // A client that reads slowly but steadily gets the whole answer, however long it takes.
        let (mut client, mut server, _cycle, _crowding) = connection(64);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut chunk = [0u8; 64];
            while got < 1024 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += client.read(&mut chunk).await.unwrap();
            }
            got
        });
        server.write_all(&[b'x'; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
