//! JSON bodies for the answers hyper gives on its own.
//!
//! A request head that hyper cannot parse never reaches the router: a target
//! of 64 KiB or more (414), a head over the read buffer or with too many
//! headers (431), a request line or header that is not HTTP (400). hyper
//! answers those itself, with an empty body, and closes the connection; a
//! client then sees a bare status where every other error names its kind
//! and the problem. hyper has no hook for these answers, so the connection's
//! socket is wrapped: a write that is exactly such an answer (status 400,
//! 414 or 431 with `content-length: 0`, which the router never sends: its
//! errors always have a JSON body) is replaced by the same status with the
//! usual error body. Everything else passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{ErrorBody, ErrorKind};
use super::middleware::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_URI_BYTES};
use super::server::MAX_HEAD_BYTES;

/// A connection's socket, with hyper's bare error answers given JSON bodies.
pub(crate) struct JsonParseErrors<S> {
    inner: S,
    /// A replacement answer not yet fully written.
    pending: Vec<u8>,
}

impl<S> JsonParseErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new() }
    }
}

/// The answer to send instead of `written`, if `written` is one of hyper's
/// bare parse-error answers.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written.get(..written.len().min(512))?).ok()?;
    let (kind, message) = match head.get(..13)? {
        "HTTP/1.1 414 " => (
            ErrorKind::UriTooLong,
            format!("the request target is longer than the server reads; the limit is {MAX_URI_BYTES} bytes"),
        ),
        "HTTP/1.1 431 " => (
            ErrorKind::HeadersTooLarge,
            format!(
                "the request head is over the {} KiB the server reads; the limit is {MAX_HEADERS} headers \
                 and {MAX_HEADER_BYTES} bytes of them",
                MAX_HEAD_BYTES / 1024
            ),
        ),
        "HTTP/1.1 400 " => (ErrorKind::MalformedRequest, "the request line or a header is not valid HTTP/1.1".into()),
        _ => return None,
    };
    let end = head.find("\r\n\r\n")?;
    let fields = format!("{}\r\n", head[..end].to_ascii_lowercase());
    if end + 4 != written.len() || !fields.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::to_string(&ErrorBody { error: &message, kind, problems: &[] }).ok()?;
    let status = kind.status();
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             x-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = replacement(buf) {
            self.pending = answer;
            // The replacement goes out now or on the flush hyper makes next;
            // hyper's own bytes count as written.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored, so hyper writes each answer as one buffer (it flattens
    // head and body), which is what `replacement` inspects.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bare_parse_error_answers_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replacement(bare).expect("replaced")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["kind"], "uri_too_long");
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(replacement(bare).unwrap()).unwrap().contains("\"headers_too_large\""));
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(String::from_utf8(replacement(bare).unwrap()).unwrap().contains("\"malformed_request\""));
        // The router's own answers have bodies; other statuses pass.
        let routed =
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 60\r\n\r\n{\"error\":\"the request target is 9000 bytes\"}";
        assert!(replacement(routed).is_none());
        assert!(replacement(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\nmore").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
