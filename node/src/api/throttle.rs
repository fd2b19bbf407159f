//! Fair shares of the node: no caller, slow or greedy, holds what the others need.
//!
//! One middleware ([`admit`]) in front of every route:
//!
//! 1. names the **caller**: the token, when the request carries a valid one; otherwise the
//!    peer's address (an IPv6 address by its /64, what one host usually has);
//! 2. counts the caller's requests **in flight**, from the request's headers until its answer
//!    is sent (a live stream counts while it is open), and answers `429 too_many_requests` past
//!    [`MAX_REQUESTS_PER_AGENT_TOKEN`], [`MAX_REQUESTS_PER_BRIDGE_TOKEN`] or
//!    [`MAX_REQUESTS_PER_ADDRESS`];
//! 3. holds the request body to a **minimum rate**: after [`BODY_GRACE`] it must average
//!    [`MIN_BODY_BYTES_PER_SEC`], or reading it fails with [`TooSlow`] (the handler answers
//!    `408 too_slow`).
//!
//! Uploads ([`Admission::upload`]) take one of the caller's [`UPLOADS_PER_TOKEN`] slots (`429
//! too_many_uploads` past them), then reserve what the upload announces in the node's upload
//! memory ([`UPLOAD_MEMORY_BYTES`]; `503 busy` after [`UPLOAD_QUEUE_WAIT`]). A slow upload so
//! holds one slot of its own caller and the bytes it announced, for a few seconds.
//!
//! Everything here is bounded: a map entry exists only while its caller has something in
//! flight.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::time::{Instant, Sleep};

use super::auth::token_hash;
use super::ApiError;
use crate::limits::{
    BODY_GRACE, MAX_REQUESTS_PER_ADDRESS, MAX_REQUESTS_PER_AGENT_TOKEN,
    MAX_REQUESTS_PER_BRIDGE_TOKEN, MIN_BODY_BYTES_PER_SEC, UPLOADS_PER_TOKEN, UPLOAD_MEMORY_BYTES,
    UPLOAD_QUEUE_WAIT,
};
use crate::store::{Store, TokenRecord, TokenRole, TreeName};

/// The unit of upload memory reservations (a semaphore permit).
const UPLOAD_MEMORY_UNIT: u64 = 1024;

/// Who a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A valid agent token (its hash).
    Agent([u8; 32]),
    /// A valid bridge token (its hash).
    Bridge([u8; 32]),
    /// No valid token: the peer's address (an IPv6 one cut to its /64).
    Address(IpAddr),
}

impl Caller {
    fn max_in_flight(self) -> usize {
        match self {
            Caller::Agent(_) => MAX_REQUESTS_PER_AGENT_TOKEN,
            Caller::Bridge(_) => MAX_REQUESTS_PER_BRIDGE_TOKEN,
            Caller::Address(_) => MAX_REQUESTS_PER_ADDRESS,
        }
    }
}

/// The shares: what every caller has in flight, and the upload memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Option<Store>,
    in_flight: Counts,
    uploads: Counts,
    upload_memory: Arc<tokio::sync::Semaphore>,
}

/// Something in flight per caller; an entry goes when its count is back to zero.
#[derive(Debug, Default)]
struct Counts(Mutex<HashMap<Caller, usize>>);

impl Counts {
    fn enter(
        counts: &Arc<Inner>,
        pick: fn(&Inner) -> &Counts,
        caller: Caller,
        max: usize,
    ) -> Option<Held> {
        let mut map = pick(counts)
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&caller).is_some_and(|count| *count >= max) {
            return None;
        }
        *map.entry(caller).or_insert(0) += 1;
        Some(Held {
            inner: Arc::clone(counts),
            pick,
            caller,
        })
    }

    fn len(&self, caller: Caller) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&caller).copied().unwrap_or(0)
    }
}

/// One unit of a caller's count, given back when dropped.
#[derive(Debug)]
pub struct Held {
    inner: Arc<Inner>,
    pick: fn(&Inner) -> &Counts,
    caller: Caller,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = (self.pick)(&self.inner)
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.caller);
            }
        }
    }
}

impl Throttle {
    /// Shares over `store`'s tokens (`None`: no token is known, every caller is an address).
    pub fn new(store: Option<Store>) -> Self {
        let memory_units = UPLOAD_MEMORY_BYTES / UPLOAD_MEMORY_UNIT;
        Throttle {
            inner: Arc::new(Inner {
                store,
                in_flight: Counts::default(),
                uploads: Counts::default(),
                upload_memory: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(memory_units).unwrap_or(usize::MAX),
                )),
            }),
        }
    }

    /// The caller of a request: its token if valid, else its address.
    fn caller(&self, parts: &Parts) -> Caller {
        if let Some(caller) = self.token_caller(parts) {
            return caller;
        }
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        Caller::Address(address_key(address))
    }

    fn token_caller(&self, parts: &Parts) -> Option<Caller> {
        let store = self.inner.store.as_ref()?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        let hash = token_hash(token);
        let stored = store.tree(TreeName::Tokens).get(hash).ok()??;
        let record: TokenRecord = crate::store::decode("tokens", &stored).ok()?;
        match record.role {
            _ if record.revoked => None,
            TokenRole::Agent(_) => Some(Caller::Agent(hash)),
            TokenRole::Bridge(_) => Some(Caller::Bridge(hash)),
        }
    }

    /// Counts a request of `caller` in; `None` when it has its share in flight already.
    fn enter(&self, caller: Caller) -> Option<Held> {
        Counts::enter(
            &self.inner,
            |inner| &inner.in_flight,
            caller,
            caller.max_in_flight(),
        )
    }

    /// How many requests `caller` has in flight.
    pub fn in_flight(&self, caller: Caller) -> usize {
        self.inner.in_flight.len(caller)
    }
}

/// The address a client is counted by: an IPv4 address (IPv4-mapped IPv6 ones as IPv4), or an
/// IPv6 one cut to its /64 (what one host usually has).
pub fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
        v4 => v4,
    }
}

/// The middleware: counts the request against its caller (`429 too_many_requests` past the
/// caller's share), holds its body to the minimum rate, and keeps the count until the answer
/// has been sent. Handlers find the [`Admission`] in the request.
pub async fn admit(State(throttle): State<Throttle>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = throttle.caller(&parts);
    let Some(held) = throttle.enter(caller) else {
        let who = match caller {
            Caller::Agent(_) | Caller::Bridge(_) => "this token",
            Caller::Address(_) => "this address",
        };
        return too_many(
            "too_many_requests",
            format!(
                "{who} has {} requests in flight already; wait for one to finish",
                caller.max_in_flight()
            ),
        );
    };
    parts.extensions.insert(Admission {
        throttle: throttle.clone(),
        caller,
    });
    let body = if body.is_end_stream() {
        body
    } else {
        Body::new(MinRate::new(body))
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    response.map(|body| Body::new(Holding { body, _held: held }))
}

fn too_many(code: &'static str, message: String) -> Response {
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What [`admit`] let in: the caller, for handlers that take more of the node (uploads).
#[derive(Debug, Clone)]
pub struct Admission {
    throttle: Throttle,
    caller: Caller,
}

/// An upload's place: one of its caller's upload slots and its bytes of upload memory, given
/// back when dropped.
#[derive(Debug)]
pub struct UploadTurn {
    _slot: Held,
    _memory: tokio::sync::OwnedSemaphorePermit,
}

impl Admission {
    /// A place for an upload announcing `announced` bytes (`None`: as many as `max`):
    /// `429 too_many_uploads` when the caller has all its slots, `503 busy` when the node's
    /// upload memory stays full for [`UPLOAD_QUEUE_WAIT`]. Cancel-safe.
    pub async fn upload(&self, announced: Option<u64>, max: u64) -> Result<UploadTurn, ApiError> {
        let slot = Counts::enter(
            &self.throttle.inner,
            |inner| &inner.uploads,
            self.caller,
            UPLOADS_PER_TOKEN,
        )
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!(
                    "{UPLOADS_PER_TOKEN} uploads of this token are in flight already; send one after the other"
                ),
            )
        })?;
        let bytes = announced.unwrap_or(max).min(max);
        let units = u32::try_from(bytes.div_ceil(UPLOAD_MEMORY_UNIT).max(1)).unwrap_or(u32::MAX);
        let memory = Arc::clone(&self.throttle.inner.upload_memory);
        let permit = tokio::time::timeout(UPLOAD_QUEUE_WAIT, memory.acquire_many_owned(units))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "the node holds as many uploads as it can, and none finished within {UPLOAD_QUEUE_WAIT:?}: retry later"
                    ),
                )
            })?
            .map_err(|_| ApiError::internal("the upload memory is closed"))?;
        Ok(UploadTurn {
            _slot: slot,
            _memory: permit,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admission {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Admission>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the request did not pass the throttle"))
    }
}

/// Reading a request body failed because it came slower than [`MIN_BODY_BYTES_PER_SEC`] after
/// [`BODY_GRACE`].
#[derive(Debug, thiserror::Error)]
#[error("the request body came slower than {MIN_BODY_BYTES_PER_SEC} bytes a second after {BODY_GRACE:?}: cut")]
pub struct TooSlow;

/// Whether `err`, or any error under it, is [`TooSlow`].
pub fn is_too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<TooSlow>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// A request body held to the minimum rate: by any moment after [`BODY_GRACE`], it must have
/// delivered [`MIN_BODY_BYTES_PER_SEC`] for every second past the grace.
struct MinRate {
    body: Body,
    started: Instant,
    grace: Duration,
    bytes_per_sec: u64,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    cut: bool,
}

impl MinRate {
    fn new(body: Body) -> Self {
        MinRate::with(body, BODY_GRACE, MIN_BODY_BYTES_PER_SEC)
    }

    fn with(body: Body, grace: Duration, bytes_per_sec: u64) -> Self {
        MinRate {
            body,
            started: Instant::now(),
            grace,
            bytes_per_sec: bytes_per_sec.max(1),
            received: 0,
            timer: None,
            cut: false,
        }
    }

    /// When the body is too slow if nothing more comes.
    fn deadline(&self) -> Instant {
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / self.bytes_per_sec);
        self.started + self.grace + earned
    }
}

impl HttpBody for MinRate {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        let deadline = this.deadline();
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.cut = true;
                Poll::Ready(Some(Err(axum::Error::new(TooSlow))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted until it is sent (or dropped).
struct Holding {
    body: Body,
    _held: Held,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(n: u8) -> Caller {
        Caller::Address(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn a_caller_gets_its_share_and_no_more_and_has_it_back_when_done() {
        let throttle = Throttle::new(None);
        let (one, two) = (address(1), address(2));
        let held: Vec<Held> = (0..MAX_REQUESTS_PER_ADDRESS)
            .map(|_| throttle.enter(one).expect("within its share"))
            .collect();
        assert!(throttle.enter(one).is_none(), "past its share");
        assert!(
            throttle.enter(two).is_some(),
            "another caller is not held up"
        );
        drop(held);
        assert_eq!(throttle.in_flight(one), 0);
        // Nothing is kept for a caller with nothing in flight.
        assert!(throttle.inner.in_flight.0.lock().expect("lock").is_empty());
        assert!(throttle.enter(one).is_some());
    }

    #[tokio::test]
    async fn uploads_past_the_tokens_slots_are_refused_and_others_go_on() {
        let throttle = Throttle::new(None);
        let admission = |caller| Admission {
            throttle: throttle.clone(),
            caller,
        };
        let max = threadline_protocol::limits::MAX_BLOB_BYTES;
        let mut turns = Vec::new();
        for _ in 0..UPLOADS_PER_TOKEN {
            turns.push(
                admission(address(1))
                    .upload(Some(1_000_000), max)
                    .await
                    .expect("a slot"),
            );
        }
        let refused = admission(address(1))
            .upload(Some(10), max)
            .await
            .expect_err("no slot left");
        assert_eq!(refused.code(), "too_many_uploads");
        admission(address(2))
            .upload(None, max)
            .await
            .expect("another token's upload has its turn");
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_cut_and_one_that_flows_is_not() {
        let stalled =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let body = Body::new(MinRate::with(stalled, Duration::from_millis(20), 1024));
        let err = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect_err("cut");
        assert!(is_too_slow(&err), "{err}");

        let whole = Body::new(MinRate::with(
            Body::from("hello"),
            Duration::from_millis(20),
            1024,
        ));
        let bytes = axum::body::to_bytes(whole, usize::MAX).await.expect("read");
        assert_eq!(&bytes[..], b"hello");
    }
}
