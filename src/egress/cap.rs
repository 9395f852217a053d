//! Bounded reads from tenant endpoints: a response body that fails once it has yielded more
//! than its cap, whatever its `Content-Length` says (or when it has none: chunked replies), so
//! an endless body costs at most the cap in memory, never more.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Largest error body read from an endpoint (S3 error XML is a few hundred bytes).
pub const ERROR_BODY_CAP: u64 = 64 << 10;
/// Largest non-streamed reply the S3 clients buffer (listings, multipart answers).
pub const BUFFERED_REPLY_CAP: u64 = 16 << 20;

/// A body went past its cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the endpoint's reply exceeded the {cap}-byte read cap")]
pub struct CapExceeded {
    /// The cap, in bytes.
    pub cap: u64,
}

/// `inner`, failing with [`CapExceeded`] once more than `cap` bytes of data went through.
#[derive(Debug)]
pub struct CappedBody<B> {
    inner: B,
    cap: u64,
    seen: u64,
    failed: bool,
}

impl<B> CappedBody<B> {
    /// Wraps `inner` with a cap of `cap` bytes.
    pub fn new(inner: B, cap: u64) -> Self {
        CappedBody {
            inner,
            cap,
            seen: 0,
            failed: false,
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen = self.seen.saturating_add(data.len() as u64);
                    if self.seen > self.cap {
                        self.failed = true;
                        let cap = self.cap;
                        return Poll::Ready(Some(Err(Box::new(CapExceeded { cap }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().min(self.cap + 1));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.min(self.cap + 1));
        }
        hint
    }
}

/// Reads an S3 object body whole, failing once more than `cap` bytes arrived (the body is
/// dropped there: nothing after the cap is read or kept).
pub async fn collect_capped(
    mut body: aws_smithy_types::byte_stream::ByteStream,
    cap: u64,
) -> Result<Vec<u8>, CollectError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(CollectError::Read)?;
        if out.len() as u64 + chunk.len() as u64 > cap {
            return Err(CollectError::Cap(CapExceeded { cap }));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why [`collect_capped`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// More than the cap arrived.
    #[error(transparent)]
    Cap(CapExceeded),
    /// The body failed (the transport, or a cap of the client underneath).
    #[error("reading the reply failed")]
    Read(#[source] aws_smithy_types::byte_stream::error::Error),
}
