use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::common::{HTTPVersion, Method};
use crate::limits::{Deadline, Limits};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // switchboard patch: the bounds on each request (PATCHES.md)
    limits: Limits,

    // switchboard patch: when the request being read must have arrived by
    // (only for connections made with `from_tcp`)
    deadline: Option<Arc<Deadline>>,

    // switchboard patch: set when the connection must end after the current
    // request (its body was not drained, or it was taken over by
    // `into_writer`/`upgrade`, or its response said `Connection: close`)
    close: Arc<AtomicBool>,

    // switchboard patch: the status the connection was refused with, if any
    refused: Option<u16>,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// switchboard patch: a head past `Limits` (414 or 431), or a body whose
    /// framing cannot be trusted (400, 501): answered, then the connection closes.
    Refused(u16, &'static str),
    /// switchboard patch: the deadline passed before any byte of the request.
    Idle,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub(crate) fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits: Limits::default(),
            deadline: None,
            close: Arc::new(AtomicBool::new(false)),
            refused: None,
        }
    }

    /// switchboard patch: the error status this connection's last request
    /// was answered with by tiny_http itself (400, 408, 413, 414, 417, 431,
    /// 501, 505), if any: for the caller's metrics.
    pub fn refused(&self) -> Option<u16> {
        self.refused
    }

    /// switchboard patch: serves requests from `socket` on the caller's own
    /// thread, within `limits`. Both halves share the one socket (one file
    /// descriptor); the caller keeps a clone of the `Arc` to close it.
    pub fn from_tcp(socket: Arc<TcpStream>, limits: Limits) -> ClientConnection {
        let deadline = Arc::new(Deadline::default());
        let (read, write) = RefinedTcpStream::shared(socket, Arc::clone(&deadline));
        let mut connection = ClientConnection::new(write, read);
        connection.limits = limits;
        connection.deadline = Some(deadline);
        connection
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// switchboard patch: a line longer than `max` bytes is refused with
    /// `status` before more of it is read, and `budget` (what is left of the
    /// whole head) shrinks by what was read.
    fn read_next_line(
        &mut self,
        max: usize,
        status: u16,
        budget: &mut usize,
    ) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf)
                    .map_err(|_| ReadError::Refused(400, "the request head is not ASCII"));
            }

            prev_byte_was_cr = byte == b'\r';

            if buf.len() >= max || *budget == 0 {
                return Err(ReadError::Refused(status, "the request head is too large"));
            }
            *budget -= 1;
            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        if let Some(deadline) = &self.deadline {
            deadline.set(Some(Instant::now() + self.limits.request_timeout));
        }
        let mut budget = self.limits.max_head_bytes;
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let max = self.limits.max_request_line_bytes;
                let line = match self.read_next_line(max, 414, &mut budget) {
                    // Nothing of a request came: an idle connection, not a slow request.
                    Err(ReadError::ReadIoError(e))
                        if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
                            && budget == self.limits.max_head_bytes =>
                    {
                        return Err(ReadError::Idle)
                    }
                    other => other?,
                };

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let max = self.limits.max_header_line_bytes;
                    let line = self.read_next_line(max, 431, &mut budget)?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() >= self.limits.max_headers {
                        return Err(ReadError::Refused(431, "too many header lines"));
                    }
                    // switchboard patch: a line that starts with white space
                    // continues the previous one (obsolete line folding); read
                    // alone it could smuggle a header past a proxy (RFC 9112 5.2).
                    if line.as_bytes()[0] == b' ' || line.as_bytes()[0] == b'\t' {
                        return Err(ReadError::Refused(400, "folded header lines are not accepted"));
                    }
                    if line.as_bytes().iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
                        return Err(ReadError::Refused(400, "a header holds a control character"));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            self.remote_addr.as_ref().ok().copied().flatten(),
            data_source,
            writer,
            crate::request::Framing {
                max_drain_bytes: self.limits.max_drain_bytes,
                max_chunked_bytes: self.limits.max_chunked_bytes,
                close: Arc::clone(&self.close),
            },
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
                request::RequestCreationError::BadFraming(status, why) => {
                    ReadError::Refused(status, why)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests || self.close.load(Ordering::Acquire) {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    self.refused = Some(400);
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    self.refused = Some(400);
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::ReadIoError(ref err))
                    if matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                {
                    // request timeout
                    self.refused = Some(408);
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    self.refused = Some(417);
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::Refused(status, why)) => {
                    self.refused = Some(status);
                    log::debug!("request refused with {}: {}", status, why);
                    let writer = self.sink.next().unwrap();
                    let response = Response::from_string(format!("{}\n", why))
                        .with_status_code(StatusCode(status))
                        .with_header(
                            "Connection: close"
                                .parse::<crate::Header>()
                                .expect("a valid header"),
                        );
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // where the next request starts is unknown
                }

                Err(ReadError::Idle) => return None,

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                // switchboard patch: answered through the request itself and
                // the connection closed. Upstream took the next writer from
                // the sink, which waits for this request's own writer to be
                // done, so it waited for ever (no answer, a thread held), then
                // went on reading requests it could not understand.
                self.refused = Some(505);
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1\n".to_owned(),
                )
                .with_status_code(StatusCode(505))
                .with_header(
                    "Connection: close"
                        .parse::<crate::Header>()
                        .expect("a valid header"),
                );
                rq.respond(response).ok();
                return None;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
