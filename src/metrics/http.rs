//! The metrics listener: just enough HTTP/1.1 for Prometheus and a
//! browser. `GET /metrics` (OpenMetrics text), `GET /` (the status page),
//! `HEAD` of either; anything else gets 404 or 405. One request per
//! connection (`Connection: close`).
//!
//! Read-only and bounded: a request head of at most 8 KiB that must arrive
//! within 5 s, an answer that must be taken within as long, and at most 32
//! connections at once (more wait in the kernel's accept queue). No
//! framework: a request line is all it reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{openmetrics, status_page, Observed};

/// Reads what a scrape or a page shows, at the moment it is asked.
pub type Source = Arc<dyn Fn() -> Observed + Send + Sync>;

const MAX_HEAD: usize = 8 * 1024;
const DEADLINE: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;

/// The OpenMetrics text format's content type (Prometheus asks for it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until `shutdown`; then waits for the requests being
/// answered.
pub async fn serve(listener: TcpListener, source: Source, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics and status page: http://{addr}/metrics and http://{addr}/");
    }
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    let log = cluster::ratelog::RateLimiter::default();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let source = Arc::clone(&source);
                tracker.spawn(async move {
                    if let Err(e) = answer(stream, &source).await {
                        debug!(%peer, error = %e, "metrics request not answered");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                cluster::warn_limited!(log, "metrics accept", error = %e, "metrics listener: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Page,
    NotFound,
    BadMethod,
    BadRequest,
}

/// Routes a request head (the bytes up to the blank line). `HEAD` is
/// answered like `GET`, without the body.
fn route(head: &[u8]) -> (Route, bool) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return (Route::BadRequest, false);
    };
    if !version.starts_with("HTTP/1.") {
        return (Route::BadRequest, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (Route::BadMethod, false);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" | "/index.html" => Route::Page,
        _ => Route::NotFound,
    };
    (route, head_only)
}

async fn answer(mut stream: TcpStream, source: &Source) -> std::io::Result<()> {
    let head = tokio::time::timeout(DEADLINE, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head too slow"))??;
    let (route, head_only) = match head {
        Some(head) => route(&head),
        None => (Route::BadRequest, false),
    };
    let (status, content_type, body) = match route {
        Route::Metrics => ("200 OK", OPENMETRICS, openmetrics(&source())),
        Route::Page => ("200 OK", "text/html; charset=utf-8", status_page(&source())),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: this listener serves /metrics and /\n".to_owned(),
        ),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "read-only: GET or HEAD\n".to_owned(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "not an HTTP/1 request\n".to_owned(),
        ),
    };
    let allow = if route == Route::BadMethod {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(DEADLINE, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken"))?
}

/// The request head, up to its blank line; `None` if it is larger than
/// [`MAX_HEAD`] or the peer closes first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(route(b"GET /?refresh=1 HTTP/1.0\r\n\r\n"), (Route::Page, false));
        assert_eq!(route(b"HEAD / HTTP/1.1\r\n\r\n"), (Route::Page, true));
        assert_eq!(
            route(b"GET /etc/passwd HTTP/1.1\r\n\r\n"),
            (Route::NotFound, false)
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            (Route::BadMethod, false)
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n").0, Route::BadRequest);
        assert_eq!(route(b"\x16\x03\x01\x02\x00\x01\x00").0, Route::BadRequest);
        assert_eq!(route(b"GET / SPDY/3 extra\r\n\r\n").0, Route::BadRequest);
    }

    async fn request(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        // A reset after the answer (unread bytes of a refused head) is fine.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn answers_metrics_the_page_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source: Source = Arc::new(|| {
            let mut o = Observed::default();
            o.server.status.node = "n<1>".into();
            o
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, source, stop.clone()));

        let metrics = request(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains(OPENMETRICS), "{metrics}");
        assert!(
            metrics.contains("vipool_serving 0\n") && metrics.ends_with("# EOF\n"),
            "{metrics}"
        );

        let page = request(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(
            page.contains("text/html") && page.contains("n&lt;1&gt;"),
            "{page}"
        );
        let head = request(addr, b"HEAD / HTTP/1.1\r\n\r\n").await;
        assert!(
            head.ends_with("\r\n\r\n") && head.contains("Content-Length: "),
            "{head}"
        );
        assert!(request(addr, b"DELETE / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        assert!(request(addr, b"GET /x HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        // A head that never ends is cut at 8 KiB, not buffered forever.
        let long = vec![b'a'; 9 * 1024];
        assert!(request(addr, &long).await.starts_with("HTTP/1.1 400"));

        stop.cancel();
        task.await.unwrap();
    }
}
