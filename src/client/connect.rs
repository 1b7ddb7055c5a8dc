//! The TCP connection to the VIP, made as a failover needs.
//!
//! - Staggered attempts. As the VIP moves, a SYN can reach the old holder
//!   just after it let the VIP go (or a dead one): it is lost, and the
//!   kernel sends it again only after 1 s. So while an attempt is pending,
//!   another starts every [`ConnectOptions::connect_stagger`] (at most
//!   [`ConnectOptions::connect_in_flight`] at once, to the resolved
//!   addresses in turn), and the first to connect wins; the others are
//!   dropped. On a live path the first attempt connects within a round
//!   trip and no second one starts. A refusal with nothing else pending
//!   ends the call at once: looping on refusals is the caller's policy.
//! - Unacknowledged bytes. A request, a registration or a handshake sent to
//!   a holder that lost power is never acknowledged by its TCP, while a live
//!   server's kernel acknowledges at once, even when the server holds the
//!   request (up to 1 s while its leadership arrives). `TCP_USER_TIMEOUT`
//!   ([`ConnectOptions::ack_timeout`]) makes the kernel end a connection
//!   whose bytes go unacknowledged that long: the client learns within it
//!   that its bytes went to a dead host and connects again, without
//!   shortening the answer deadline for a live server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::Instant;

use super::{ClientError, ConnectOptions};

/// A TCP connection to `addr` within `options`' connect timeout, with
/// `TCP_NODELAY` and `TCP_USER_TIMEOUT` set.
pub(super) async fn connect_tcp(
    addr: impl ToSocketAddrs,
    options: &ConnectOptions,
) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    let tcp = match options.connect_stagger {
        Some(stagger) => {
            let plan = Plan {
                timeout: options.connect_timeout,
                stagger,
                in_flight: options.connect_in_flight,
            };
            staggered(&addrs, plan, TcpStream::connect).await?
        }
        None => one_at_a_time(&addrs, options.connect_timeout).await?,
    };
    tcp.set_nodelay(true)?;
    if let Some(after) = options.ack_timeout {
        socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(user_timeout(after)))?;
    }
    Ok(tcp)
}

/// TCP's minimum retransmission timeout (Linux `TCP_RTO_MIN`): the soonest
/// a segment lost on a LAN is sent again.
const RTO_MIN: Duration = Duration::from_millis(200);

/// The `TCP_USER_TIMEOUT` that ends a connection about `ack_timeout` after
/// bytes it sent went unacknowledged.
///
/// Linux counts the user timeout from the first retransmission, which
/// comes one retransmission timeout (200 ms at least) after the bytes:
/// given the ack timeout itself, a connection whose host lost power ended
/// 518 ms after its request for 300 ms (kernel 6.18, a namespace pair with
/// the server's link cut; 150 ms gave 362 ms and 100 ms gave 311 ms). That
/// late, a switch missed the new VIP holder's first 150 ms
/// (failover_bench, power loss: the fresh connect's slow runs of 520-580
/// ms). Less the retransmission timeout, the kernel gives up on a dead host
/// at the ack timeout, and still only once a retransmission went
/// unacknowledged too.
fn user_timeout(ack_timeout: Duration) -> Duration {
    ack_timeout.saturating_sub(RTO_MIN).max(Duration::from_millis(1))
}

/// Each address in turn, each given `timeout`.
async fn one_at_a_time(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for &to in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(timed_out(to, timeout)),
        }
    }
    Err(last.unwrap_or_else(resolves_to_nothing))
}

/// How [`staggered`] runs its attempts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The whole call gives up this long after it began.
    timeout: Duration,
    /// A new attempt starts this long after the previous one while no
    /// attempt has connected.
    stagger: Duration,
    /// At most this many attempts pending at once (at least 1; 1 makes
    /// one attempt for the whole timeout).
    in_flight: usize,
}

/// The first of several staggered attempts `connect(addr)` to complete,
/// the others dropped (see the module docs).
///
/// The first attempt is kept for the whole timeout (on a path slower than
/// the stagger, it is the one that connects, with the kernel's own SYN
/// retransmissions); once `in_flight` attempts are pending, each new one
/// replaces the oldest of the others, so that a new SYN still leaves every
/// stagger.
///
/// The attempts are polled here, not spawned, and before anything else:
/// a client on a starved CPU may not be polled for longer than the
/// stagger or the whole timeout, and an attempt that connected meanwhile
/// must win. Starting another attempt (a new SYN, a new connection for the
/// server to accept) or giving up first would make a herd of starved
/// switches several connections each.
async fn staggered<T, F, Fut>(addrs: &[SocketAddr], plan: Plan, mut connect: F) -> io::Result<T>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let Some(&first) = addrs.first() else {
        return Err(resolves_to_nothing());
    };
    let in_flight = plan.in_flight.max(1);
    let began = Instant::now();
    // The pending attempts, by their number, in the order they started.
    // Dropped on return, which closes their sockets.
    let mut pending: Vec<(usize, Pin<Box<Fut>>)> = Vec::new();
    let mut started = 0usize;
    let mut last = None;
    // Fires when the next attempt may start (at once for the first).
    let next = tokio::time::sleep_until(began);
    let deadline = tokio::time::sleep_until(began + plan.timeout);
    tokio::pin!(next, deadline);
    loop {
        // Only when an attempt may start or replace one then: with every
        // slot held by the first attempt, waking would spin.
        let may_start = pending.len() < in_flight || pending.iter().any(|(n, _)| *n > 0);
        let event = std::future::poll_fn(|cx| {
            for i in 0..pending.len() {
                if let Poll::Ready(result) = pending[i].1.as_mut().poll(cx) {
                    pending.remove(i);
                    return Poll::Ready(Event::Done(result));
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Deadline);
            }
            if may_start && next.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Start);
            }
            Poll::Pending
        })
        .await;
        let after_ms = began.elapsed().as_secs_f64() * 1000.0;
        match event {
            Event::Done(Ok(conn)) => {
                tracing::debug!(after_ms, started, "TCP connected");
                return Ok(conn);
            }
            Event::Done(Err(e)) => {
                tracing::debug!(after_ms, error = %e, "TCP connect attempt failed");
                if pending.is_empty() {
                    // Nothing else pending: a refusal or an unreachable
                    // network is said at once, after every address.
                    if started >= addrs.len() {
                        return Err(e);
                    }
                    next.as_mut().reset(Instant::now());
                }
                last = Some(e);
            }
            Event::Deadline => {
                return Err(last
                    .filter(|_| pending.is_empty())
                    .unwrap_or_else(|| timed_out(first, plan.timeout)));
            }
            Event::Start => {
                if pending.len() >= in_flight {
                    // The oldest but the first attempt.
                    if let Some(oldest) = pending.iter().position(|(n, _)| *n > 0) {
                        pending.remove(oldest);
                    }
                }
                tracing::debug!(attempt = started, after_ms, "TCP connect attempt");
                pending.push((started, Box::pin(connect(addrs[started % addrs.len()]))));
                started += 1;
                next.as_mut().reset(Instant::now() + plan.stagger);
            }
        }
    }
}

/// What woke [`staggered`], in the order it looks: an attempt ended, the
/// timeout, the stagger.
enum Event<T> {
    Done(io::Result<T>),
    Deadline,
    Start,
}

fn timed_out(to: SocketAddr, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no TCP connection to {to} within {} ms", timeout.as_millis()),
    )
}

fn resolves_to_nothing() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing")
}

#[cfg(test)]
mod tests {
    /// The user timeout is the ack timeout less TCP's minimum
    /// retransmission timeout, never zero (which would be the kernel's own
    /// limit of minutes).
    #[test]
    fn the_user_timeout_leaves_the_first_retransmission_out() {
        use super::user_timeout;
        let ms = Duration::from_millis;
        assert_eq!(user_timeout(ms(300)), ms(100));
        assert_eq!(user_timeout(ms(1200)), ms(1000));
        assert_eq!(user_timeout(ms(150)), ms(1));
        assert_eq!(user_timeout(ms(0)), ms(1));
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    /// A connector whose attempts never complete (their SYNs are lost),
    /// counting how many are pending at once and how many started.
    #[derive(Clone, Default)]
    struct BlackHole {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        started: Arc<AtomicUsize>,
    }

    struct Pending(Arc<AtomicUsize>);

    impl Drop for Pending {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl BlackHole {
        fn connect(&self, _to: SocketAddr) -> impl Future<Output = io::Result<()>> + Send + 'static {
            self.started.fetch_add(1, Ordering::SeqCst);
            let (now, most) = (self.now.clone(), self.most.clone());
            // Counted from its first poll (its SYN sent) to its drop (its
            // socket closed).
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                let _guard = Pending(now);
                std::future::pending().await
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_stay_bounded_and_the_call_ends_at_the_timeout() {
        let hole = BlackHole::default();
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 4,
        };
        let began = Instant::now();
        let e = staggered(&[ADDR], plan, |to| hole.connect(to)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(began.elapsed(), plan.timeout);
        // A new SYN every 50 ms (0, 50, ..., 250 ms), never more than four
        // pending: from 200 ms on, each new one replaced the oldest but
        // the first.
        assert_eq!(hole.started.load(Ordering::SeqCst), 6);
        assert_eq!(hole.most.load(Ordering::SeqCst), 4);
        // Every attempt was dropped with the call.
        tokio::task::yield_now().await;
        assert_eq!(hole.now.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_in_flight_is_one_attempt_for_the_whole_timeout() {
        // (Under paused time a loop that spun instead of sleeping would
        // never let the clock reach the deadline: this test would hang.)
        let hole = BlackHole::default();
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 1,
        };
        let began = Instant::now();
        let e = staggered(&[ADDR], plan, |to| hole.connect(to)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(began.elapsed(), plan.timeout);
        assert_eq!(hole.started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_attempt_starts_every_stagger_while_the_first_is_pending() {
        // The first attempt's SYN is lost; the third (at 100 ms) connects.
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 4,
        };
        let began = Instant::now();
        let counted = calls.clone();
        let won = staggered(&[ADDR], plan, move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    std::future::pending::<()>().await;
                }
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(won, 2);
        assert_eq!(began.elapsed(), Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_attempt_is_kept_on_a_path_slower_than_the_stagger() {
        // A round trip of 250 ms: every attempt would connect after it,
        // but with two in flight the later ones are replaced every 50 ms.
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 2,
        };
        let began = Instant::now();
        let counted = calls.clone();
        let won = staggered(&[ADDR], plan, move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(won, 0);
        assert_eq!(began.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_with_nothing_pending_ends_the_call_at_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 4,
        };
        let began = Instant::now();
        let counted = calls.clone();
        let e = staggered(&[ADDR], plan, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionRefused)) }
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// An attempt of [`first_connects_later`]: it yields its number.
    type Attempt = Pin<Box<dyn Future<Output = io::Result<usize>> + Send>>;

    /// A connector whose first attempt connects once `connected` is sent
    /// (while its caller is not polled); the others never complete.
    fn first_connects_later(
        calls: &Arc<AtomicUsize>,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        impl FnMut(SocketAddr) -> Attempt,
    ) {
        let (connected, wait) = tokio::sync::oneshot::channel::<()>();
        let mut wait = Some(wait);
        let counted = calls.clone();
        let connect = move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let wait = wait.take();
            Box::pin(async move {
                match wait {
                    Some(wait) => {
                        let _ = wait.await;
                        Ok(n)
                    }
                    None => std::future::pending().await,
                }
            }) as Attempt
        };
        (connected, connect)
    }

    /// The first attempt connects at once, but the caller is next polled
    /// only `starved` later (a starved CPU): that connection wins, and no
    /// other attempt starts. The connection and the stagger (or the
    /// timeout) are both ready at that poll; the old loop picked between
    /// them at random (tokio::select!), so the case is run many times.
    async fn a_connection_made_while_starved_for(starved: Duration) {
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 4,
        };
        for round in 0..64 {
            let calls = Arc::new(AtomicUsize::new(0));
            let (connected, connect) = first_connects_later(&calls);
            let call = staggered(&[ADDR], plan, connect);
            tokio::pin!(call);
            assert!(std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            connected.send(()).unwrap();
            tokio::time::advance(starved).await;
            match call.await {
                Ok(won) => assert_eq!(won, 0, "round {round}"),
                Err(e) => panic!("round {round}: {e}"),
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "round {round}: another attempt started"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_made_while_the_caller_was_starved_wins_over_a_new_attempt() {
        // Four staggers on.
        a_connection_made_while_starved_for(Duration::from_millis(200)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_made_while_the_caller_was_starved_wins_over_the_timeout() {
        // Past the whole timeout: the connection is not thrown away for an error.
        a_connection_made_while_starved_for(Duration::from_millis(400)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn every_address_is_tried_in_turn() {
        let other: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let plan = Plan {
            timeout: Duration::from_millis(300),
            stagger: Duration::from_millis(50),
            in_flight: 4,
        };
        // The first address refuses at once: the second is tried at once.
        let won = staggered(&[ADDR, other], plan, move |to| async move {
            if to == ADDR {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            } else {
                Ok(to)
            }
        })
        .await
        .unwrap();
        assert_eq!(won, other);
    }
}
