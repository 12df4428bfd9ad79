//! A small HTTP/1.1 client over one TCP connection, the way an ESP32 talks:
//! one kept-alive connection, requests written whole, bodies read in pieces
//! at the pace the device can take, and a connection that can be cut at any
//! byte. A general client (reqwest, hyper's pool) hides exactly the things a
//! simulator must control, so this one is kept small and strict instead:
//! bodies must carry `Content-Length`, which every answer of the OTA server
//! and of nginx's `return`/static files does.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The `User-Agent` ESP-IDF's HTTP client sends.
pub const USER_AGENT: &str = "ESP32 HTTP Client/1.0";

/// The longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest body read whole (JSON answers).
const MAX_SMALL_BODY: u64 = 1024 * 1024;

/// Where requests go: an `http://host:port` origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
}

impl Origin {
    /// Resolves the origin of an `http://` URL.
    pub async fn of(url: &url::Url) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.scheme() == "http",
            "only http:// URLs are supported (got {}); put the simulator next to the server or its proxy",
            url.scheme()
        );
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("{url} has no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self { addr, host })
    }
}

/// The head of a response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub content_length: u64,
    /// The server will close the connection after this response.
    pub close: bool,
    pub content_range: Option<String>,
    pub retry_after: Option<Duration>,
    pub etag: Option<String>,
}

/// One request to write: method, path (with query), extra header lines and body.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Header lines, each `Name: value` without CRLF.
    pub headers: Vec<String>,
    pub body: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
}

impl Request<'_> {
    /// The request's bytes, ready to write.
    pub fn encode(&self, host: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.map_or(0, <[u8]>::len));
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\nUser-Agent: ");
        out.extend_from_slice(USER_AGENT.as_bytes());
        out.extend_from_slice(b"\r\n");
        for line in &self.headers {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(content_type) = self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = self.body {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// One kept-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Body bytes of the current response not read yet.
    body_left: u64,
    /// The current response asked to close the connection.
    closing: bool,
}

impl Conn {
    /// Connects. `recv_buffer` shrinks the socket's receive buffer, which
    /// makes a slow reader slow on the wire too (an ESP32's TCP window is a
    /// few KiB), instead of the kernel soaking up megabytes at once.
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> io::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            body_left: 0,
            closing: false,
        })
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        !self.closing && self.body_left == 0
    }

    /// Writes a request and reads the response head. The body is then read
    /// with [`Conn::body_chunk`], [`Conn::body`] or [`Conn::discard_body`].
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Head> {
        if self.body_left != 0 {
            return Err(io::Error::other("the previous response's body was not read"));
        }
        self.stream.write_all(request).await?;
        self.read_head().await
    }

    /// Writes a `HEAD` request and reads the answer, which has no body
    /// whatever its `Content-Length` says.
    pub async fn send_head(&mut self, request: &[u8]) -> io::Result<Head> {
        let head = self.send(request).await?;
        self.body_left = 0;
        Ok(head)
    }

    async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = parse_head(&response)?;
                    self.buf.advance(len);
                    self.body_left = head.content_length;
                    self.closing = head.close;
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() >= MAX_HEAD {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            self.fill(4096).await?;
        }
    }

    async fn fill(&mut self, want: usize) -> io::Result<()> {
        self.buf.reserve(want);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }

    /// Up to `max` bytes of the body; empty when the body is done.
    pub async fn body_chunk(&mut self, max: usize) -> io::Result<Bytes> {
        if self.body_left == 0 {
            return Ok(Bytes::new());
        }
        if self.buf.is_empty() {
            let want = max.min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
            self.fill(want).await?;
        }
        let take = self
            .buf
            .len()
            .min(max)
            .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
        self.body_left -= take as u64;
        Ok(self.buf.split_to(take).freeze())
    }

    /// The whole body, for small answers.
    pub async fn body(&mut self) -> io::Result<Bytes> {
        if self.body_left > MAX_SMALL_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer body too large"));
        }
        let mut out = BytesMut::with_capacity(self.body_left as usize);
        loop {
            let chunk = self.body_chunk(64 * 1024).await?;
            if chunk.is_empty() {
                return Ok(out.freeze());
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// Reads and drops the body; returns its length.
    pub async fn discard_body(&mut self) -> io::Result<u64> {
        let mut total = 0;
        while self.body_left > 0 {
            if self.buf.is_empty() {
                self.buf.clear();
                self.fill(256 * 1024).await?;
            }
            let take = self
                .buf
                .len()
                .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
            self.buf.advance(take);
            self.body_left -= take as u64;
            total += take as u64;
        }
        Ok(total)
    }
}

fn parse_head(response: &httparse::Response<'_, '_>) -> io::Result<Head> {
    let status = response.code.unwrap_or(0);
    let mut head = Head {
        status,
        content_length: 0,
        close: response.version == Some(0),
        content_range: None,
        retry_after: None,
        etag: None,
    };
    let mut has_length = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            has_length = true;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked bodies are not supported by the simulator",
            ));
        } else if header.name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if header.name.eq_ignore_ascii_case("content-range") {
            head.content_range = Some(value.to_owned());
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.parse().ok().map(Duration::from_secs);
        } else if header.name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_owned());
        }
    }
    if !has_length && status != 204 && status != 304 && !(100..200).contains(&status) {
        head.close = true;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an answer without Content-Length",
        ));
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_with_length_and_headers() {
        let body = br#"{"a":1}"#;
        let request = Request {
            method: "POST",
            path: "/api/ota/check",
            headers: vec!["Authorization: Bearer t".into()],
            body: Some(body),
            content_type: Some("application/json"),
        };
        let text = String::from_utf8(request.encode("127.0.0.1:8080")).unwrap();
        assert!(text.starts_with("POST /api/ota/check HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer t\r\n"));
        assert!(text.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"));
    }

    fn get_root() -> Vec<u8> {
        Request {
            method: "GET",
            path: "/",
            ..Default::default()
        }
        .encode("x")
    }

    /// A server that takes one connection and answers each request on it
    /// with the next of `answers`.
    async fn answering(answers: &'static [&'static [u8]]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for answer in answers {
                let _ = socket.read(&mut buf).await.unwrap();
                socket.write_all(answer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn bodies_are_read_in_pieces_and_connections_kept() {
        let addr = answering(&[
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
        ])
        .await;
        let mut conn = Conn::connect(addr, None).await.unwrap();
        let request = get_root();
        let head = conn.send(&request).await.unwrap();
        assert_eq!((head.status, head.content_length), (200, 11));
        assert_eq!(&conn.body_chunk(5).await.unwrap()[..], b"hello");
        assert!(!conn.reusable());
        assert_eq!(&conn.body().await.unwrap()[..], b" world");
        assert!(conn.reusable());
        conn.send(&request).await.unwrap();
        assert_eq!(conn.discard_body().await.unwrap(), 6);
    }

    #[tokio::test]
    async fn a_cut_body_is_an_error() {
        let addr = answering(&[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"]).await;
        let mut conn = Conn::connect(addr, None).await.unwrap();
        let request = get_root();
        conn.send(&request).await.unwrap();
        let error = conn.body().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
