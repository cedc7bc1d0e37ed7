//! A plugin's stdout and stderr: captured in memory, bounded, never failing
//! the writer.
//!
//! wasmtime's `MemoryOutputPipe` returns an error to the guest once its cap is
//! reached, which makes a chatty plugin crash instead of finishing. This pipe
//! accepts everything, keeps the first part and the last part (the tail is what
//! explains a crash), and counts what it dropped in between.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much one write may carry; WASI streams use 64 KiB permits.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// A bounded capture of one output stream; clones share the buffer.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    head_cap: usize,
    tail_cap: usize,
    buf: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    /// Keep at most `cap` bytes: a quarter from the start, the rest from the end.
    pub fn new(cap: usize) -> Self {
        Self {
            head_cap: cap / 4,
            tail_cap: cap - cap / 4,
            buf: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let Ok(mut b) = self.buf.lock() else { return };
        b.total += bytes.len() as u64;
        let room = self.head_cap.saturating_sub(b.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        b.head.extend_from_slice(to_head);
        if rest.len() >= self.tail_cap {
            b.tail.clear();
            b.tail.extend(&rest[rest.len() - self.tail_cap..]);
        } else {
            let overflow = (b.tail.len() + rest.len()).saturating_sub(self.tail_cap);
            b.tail.drain(..overflow);
            b.tail.extend(rest);
        }
    }

    /// Bytes written in all, kept or not.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.buf.lock().map(|b| b.total).unwrap_or(0)
    }

    /// What was kept, as text, with a note where bytes were dropped.
    pub fn text(&self) -> String {
        let Ok(b) = self.buf.lock() else {
            return String::new();
        };
        let kept = (b.head.len() + b.tail.len()) as u64;
        let mut out = String::from_utf8_lossy(&b.head).into_owned();
        if b.total > kept {
            out.push_str(&format!(
                "\n[... {} bytes of output dropped ...]\n",
                b.total - kept
            ));
        }
        let tail: Vec<u8> = b.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }

    /// The last `n` bytes or so, as text (for crash reports).
    pub fn tail_text(&self, n: usize) -> String {
        let text = self.text();
        let start = text.len().saturating_sub(n);
        let start = (start..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].trim().to_owned()
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let o = CapturedOutput::new(100);
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.text(), "hello world");
    }

    #[test]
    fn floods_keep_head_and_tail_and_never_fail() {
        let mut o = CapturedOutput::new(1000);
        assert!(o.write(Bytes::from_static(b"START")).is_ok());
        for _ in 0..100_000 {
            assert_eq!(o.check_write().unwrap(), WRITE_PERMIT);
            o.write(Bytes::from_static(b"0123456789")).unwrap();
        }
        o.write(Bytes::from_static(b"END")).unwrap();
        let text = o.text();
        assert!(text.starts_with("START") && text.ends_with("END"), "{text}");
        assert!(text.contains("bytes of output dropped"));
        assert!(text.len() < 1100);
        assert_eq!(o.total(), 5 + 1_000_000 + 3);
        assert!(o.tail_text(10).ends_with("END"));
    }

    #[test]
    fn one_huge_write_is_bounded() {
        let o = CapturedOutput::new(64);
        o.push(&vec![b'a'; 10_000_000]);
        o.push(b"z");
        assert!(o.text().len() < 200);
        assert!(o.text().ends_with('z'));
    }
}
