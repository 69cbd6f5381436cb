//! A write that never waits: `sendmsg` with `MSG_DONTWAIT`, for the hub's
//! writes through to a member's socket (`queue::through`). The socket
//! itself stays blocking for its writer thread; only this one call does not
//! wait, so nothing else about the connection changes.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Writes what the socket takes of `slices` now; returns how many bytes
/// (0 when its send buffer is full).
#[allow(unsafe_code)]
pub fn send_now(socket: &TcpStream, slices: &[IoSlice]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (std
    // guarantees it); the header points at `slices`, which outlives the
    // call, and the kernel only reads them.
    let sent = unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_iov = slices.as_ptr() as *mut libc::iovec;
        header.msg_iovlen = slices.len() as _;
        libc::sendmsg(
            socket.as_raw_fd(),
            &header,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent >= 0 {
        return Ok(sent as usize);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn it_writes_what_fits_and_never_waits_on_a_full_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let socket =
            TcpStream::connect(listener.local_addr().expect("an address")).expect("connect");
        let (mut peer, _) = listener.accept().expect("accept");
        let sent = send_now(&socket, &[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).expect("sent");
        assert_eq!(sent, 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"abcd");
        // The peer reads no more: the buffers fill, and then it takes nothing.
        let block = vec![7u8; 64 * 1024];
        let mut total = 0;
        loop {
            let sent = send_now(&socket, &[IoSlice::new(&block)]).expect("no error");
            if sent == 0 {
                break;
            }
            total += sent;
            assert!(total < 1 << 30, "a socket without end");
        }
        assert!(total > 0);
    }
}
