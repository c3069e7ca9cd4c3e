//! Shared by the load-run benches: a kept-alive HTTP/1.1 client (hyper) and
//! percentiles.

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use tokio::net::TcpStream;

/// A kept-alive HTTP/1.1 connection.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Status, Retry-After seconds, body.
    pub async fn send(&mut self, method: &str, path: &str, body: String) -> std::io::Result<(u16, Option<u64>, Bytes)> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        self.send_request(request).await
    }

    /// As [`Client::send`], for a request built by the caller (other headers).
    pub async fn send_request(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> std::io::Result<(u16, Option<u64>, Bytes)> {
        self.sender.ready().await.map_err(std::io::Error::other)?;
        let response = self.sender.send_request(request).await.map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok((status, retry, body))
    }
}

/// The `p` quantile (0 to 1) of `samples`, nearest rank; NaN when empty.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}
