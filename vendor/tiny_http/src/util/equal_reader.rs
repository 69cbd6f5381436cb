use std::io::Read;
use std::io::Result as IoResult;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the remaining bytes will be read and
/// thrown away.
///
/// switchboard patch: at most `max_drain` of them, through a small fixed
/// buffer. Upstream allocated a buffer of the client's length (a
/// `Content-Length` of 50 GB aborted the process; `u64::MAX` panicked the
/// thread). Past `max_drain`, or when the connection is closing anyway,
/// nothing is read and `close` is set, so the connection ends instead of
/// reading the rest of the body as the next request.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    last_read_signal: Sender<IoResult<()>>,
    max_drain: usize,
    close: Arc<AtomicBool>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(
        reader: R,
        size: usize,
        max_drain: usize,
        close: Arc<AtomicBool>,
    ) -> (EqualReader<R>, Receiver<IoResult<()>>) {
        let (tx, rx) = channel();

        let r = EqualReader {
            reader,
            size,
            last_read_signal: tx,
            max_drain,
            close,
        };

        (r, rx)
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        if self.size == 0 {
            return;
        }
        if self.size > self.max_drain || self.close.load(Ordering::Acquire) {
            self.close.store(true, Ordering::Release);
            return;
        }
        let mut buf = [0u8; 1024];
        while self.size > 0 {
            let want = self.size.min(buf.len());
            match self.reader.read(&mut buf[..want]) {
                Ok(0) => {
                    self.close.store(true, Ordering::Release);
                    self.last_read_signal.send(Ok(())).ok();
                    return;
                }
                Ok(read) => self.size -= read,
                Err(e) => {
                    // Timed out, or the peer left: the rest never comes.
                    self.close.store(true, Ordering::Release);
                    self.last_read_signal.send(Err(e)).ok();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5, 1024, Default::default());

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5, 1024, Default::default());

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }
}

#[cfg(test)]
mod drain_tests {
    use super::EqualReader;
    use std::io::{Cursor, Read};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_body_past_the_drain_limit_is_not_read_and_closes_the_connection() {
        let mut source = Cursor::new(vec![b'a'; 100]);
        let close = Arc::new(AtomicBool::new(false));
        drop(EqualReader::new(source.by_ref(), usize::MAX, 64, Arc::clone(&close)));
        assert!(close.load(Ordering::Acquire));
        assert_eq!(source.position(), 0, "nothing was read");
    }

    #[test]
    fn a_small_unread_body_is_drained_and_the_connection_kept() {
        let mut source = Cursor::new(vec![b'a'; 100]);
        let close = Arc::new(AtomicBool::new(false));
        drop(EqualReader::new(source.by_ref(), 60, 64, Arc::clone(&close)));
        assert!(!close.load(Ordering::Acquire));
        assert_eq!(source.position(), 60);
    }

    #[test]
    fn a_body_cut_short_closes_the_connection() {
        let mut source = Cursor::new(vec![b'a'; 10]);
        let close = Arc::new(AtomicBool::new(false));
        drop(EqualReader::new(source.by_ref(), 60, 64, Arc::clone(&close)));
        assert!(close.load(Ordering::Acquire));
    }
}
