//! One relayed exchange, step by step: the request head for the upstream hop ([`request_head`]), the upgrade
//! offer ([`offer_upgrade`]), the 1xx watch with its 100-continue gate ([`informational`]), the exchange with
//! its timeouts ([`exchange`]), then the 101 path ([`switch`]) or the response head for the client
//! ([`response_head`]). The two relay rooms differ only in their [`Leg`].

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;

use super::{EXPECT_CONTINUE_WAIT_MILLIS, Forward, MAX_INFORMATIONAL, Reverse, Upstream};
use crate::backend::Ctx;
use crate::error::{Error, Kind, Side};
use crate::heap;
use crate::http::upgrade::{self, Allowed, ExtendedConnect};
use crate::http::{Body, OwnFields, forward_request_head, forward_response_head, hop};
use crate::upstream::{ConnError, HttpClient, OnInformational, ResponseBody, SendError};

/// How the two relay rooms differ around the one exchange.
pub(super) enum Leg<'a> {
    /// The forward proxy. `parent_auth`: its parent proxy's credentials, for a request sent to the parent as it
    /// is (plain `http://`; `https://` goes inside a CONNECT, which carries them itself).
    Forward { room: &'a Forward, parent_auth: Option<HeaderValue> },
    /// A gateway route. `public`: the Host the client addressed, and `proto` how it came (`http`/`https`): a
    /// `Location` pointing at the upstream is rewritten to that address.
    /// `key`: what a hashing group balances the request by.
    Reverse { room: &'a Reverse, public: Option<&'a HeaderValue>, proto: &'static str, key: Option<u64> },
}

impl Leg<'_> {
    /// Sends the request to the upstream: the forward proxy's or a route's one client, or a member of the
    /// route's group (which may send it to another member: relay::group).
    async fn request(&self, req: Request<Body>, replayable: bool) -> Result<Response<ResponseBody>, Error> {
        let target = req.uri().clone();
        let client: &HttpClient = match self {
            Leg::Forward { room, .. } => &room.client,
            Leg::Reverse { room, key, .. } => match &room.upstream {
                Upstream::One(client) => client,
                // Boxed: a group's state (some 2 KiB) would otherwise sit in every relayed request's future.
                Upstream::Group(g) => {
                    return heap::pinned!(super::group::send(g, *key, req, replayable, &room.prefix)).await;
                }
            },
        };
        client.request(req).await.map_err(|e| client_error(e, &target))
    }

    /// Whether the request may go out over HTTP/2 (its route's `upstream_http`; every member of a group shares it).
    fn may_speak_h2(&self) -> bool {
        match self {
            Leg::Forward { room, .. } => room.client.may_speak_h2(),
            Leg::Reverse { room, .. } => match &room.upstream {
                Upstream::One(client) => client.may_speak_h2(),
                Upstream::Group(g) => g.members().iter().any(|m| m.client.may_speak_h2()),
            },
        }
    }

    fn upgrades(&self) -> &Allowed {
        match self {
            Leg::Forward { room, .. } => &room.upgrades,
            Leg::Reverse { room, .. } => &room.upgrades,
        }
    }
}

/// Relays `req` (its fields and target already the upstream's): writes hopgate's own fields (`own`), sends with
/// the response-head timeout, and prepares the response for the client.
pub(super) async fn send(
    mut req: Request<Incoming>,
    ctx: &Ctx<'_>,
    own: OwnFields<'_>,
    leg: Leg<'_>,
) -> Result<Response<Body>, Error> {
    let target = req.uri().clone();
    let version = req.version();
    // An HTTP/2 WebSocket (RFC 8441), already in its HTTP/1.1 form (http::upgrade::extended_connect).
    let extended = req.extensions_mut().remove::<ExtendedConnect>();
    let asked = request_head(&mut req, own, &leg);
    let upgrade = offer_upgrade(&mut req, asked, leg.upgrades(), extended.is_some());
    if extended.is_some() && upgrade.is_none() {
        return Err(Error::client(Kind::BadRequest, "websocket is not on this route's upgrades list"));
    }
    let gate = continue_gate(&mut req, version);
    let resp = exchange(req, gate, ctx, &leg, &target).await?;
    ctx.answered_from(resp.body().upstream_addr());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switch(resp, upgrade, extended, ctx, &target);
    }
    if extended.is_some() && resp.status().is_success() {
        // A 2xx to an extended CONNECT opens the tunnel: it can only come from a 101.
        return Err(Error::upstream(
            Kind::UpstreamProtocol,
            format!(
                "{} answered the WebSocket request with {} instead of switching",
                display_authority(&target),
                resp.status()
            ),
        ));
    }
    response_head(resp, version, ctx, &leg, &target)
}

/// The request head for the upstream hop: hop-by-hop fields out and hopgate's own in, in one order
/// (`http::forward_request_head`); the parent's credentials on a forward proxy's hop to it; chunked framing for a
/// body of unknown length. Returns the upgrade the client asked for (its fields are gone already).
#[inline]
fn request_head(req: &mut Request<Incoming>, own: OwnFields<'_>, leg: &Leg<'_>) -> Option<HeaderValue> {
    let stripped = forward_request_head(req.headers_mut(), own);
    if let Leg::Forward { parent_auth: Some(auth), .. } = leg {
        // The parent proxy's own credentials, for its hop only.
        req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth.clone());
    }
    if stripped.te_trailers && leg.may_speak_h2() {
        // TE is hop-by-hop, but HTTP/2 carries its `trailers` member (RFC 9113 §8.2.2) and gRPC servers require
        // it: the client accepts trailers, and hopgate passes them on. An HTTP/1.1 upstream connection never gets
        // it (upstream::pool removes it there).
        req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // A body of unknown length (the client sent it chunked, or as HTTP/2 DATA without a length) goes up chunked:
    // hyper's client sends a GET, HEAD or CONNECT that does not say so with no body at all (it assumes such a
    // method has none), and the body would be lost. A body with a length keeps its Content-Length.
    if !req.body().is_end_stream()
        && req.body().size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    stripped.upgrade
}

/// An upgrade hopgate offered upstream for the client.
struct Upgrade {
    /// The protocols offered (the client's, minus those not on the list).
    offer: HeaderValue,
    /// The client's connection, once hyper hands it over after the 101.
    client: OnUpgrade,
}

/// RFC 9110 §7.8: an upgrade is hop-by-hop, so hopgate re-offers it on its own hop (HTTP/1.1, or an HTTP/2
/// extended CONNECT: `extended`), and only the protocols on the list: with none left the request goes on as an
/// ordinary one (Upgrade, Connection and what it named are gone already).
#[inline]
fn offer_upgrade(
    req: &mut Request<Incoming>,
    asked: Option<HeaderValue>,
    upgrades: &Allowed,
    extended: bool,
) -> Option<Upgrade> {
    let offer = match asked {
        Some(asked) if req.version() == Version::HTTP_11 || extended => upgrades.filter(&asked)?,
        _ => return None,
    };
    req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    req.headers_mut().insert(header::UPGRADE, offer.clone());
    Some(Upgrade { offer, client: hyper::upgrade::on(req) })
}

/// Holds a body that expects `100-continue` behind a gate the upstream's 100 opens, and returns the gate. (The
/// upstream connection counts 1xx responses itself: more than [`MAX_INFORMATIONAL`] end the exchange.)
///
/// The client's 100 (Continue) is the upstream's to give (RFC 9110 §15.2: a proxy forwards 1xx): the body is held
/// back, so hyper does not promise it, until the upstream sends its 100, or says nothing for a moment (an
/// HTTP/1.0 upstream never will). An upstream that answers 417 or 401 at once is answered as is, and the client
/// never sends its body. RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored;
/// forwarded in an HTTP/1.1 request it would mean something the client never asked.
#[inline]
fn continue_gate(req: &mut Request<Incoming>, version: Version) -> Option<oneshot::Receiver<()>> {
    let expects_continue =
        req.headers().get(header::EXPECT).is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if version == Version::HTTP_10 {
        req.headers_mut().remove(header::EXPECT);
    }
    if !expects_continue || version != Version::HTTP_11 {
        return None;
    }
    let (tx, gate) = oneshot::channel();
    let on_continue = std::sync::Mutex::new(Some(tx));
    // hopgate's own HTTP/1.1 connection calls this extension. hyper's HTTP/2 client has no such callback (its
    // `ext::on_informational` is read by its HTTP/1 client only): the h2 crate drops interim responses itself.
    req.extensions_mut().insert(OnInformational(Arc::new(move |res: &Response<()>| {
        if res.status() == StatusCode::CONTINUE
            && let Some(tx) = on_continue.lock().ok().and_then(|mut t| t.take())
        {
            let _ = tx.send(());
        }
    })));
    Some(gate)
}

/// Sends the request and waits for the response head. The response-head timeout starts once the request body is
/// sent: a long upload is not a slow origin. A client that stops sending its body for the idle time is cut off;
/// so is an upstream that stops taking it for the response-head time.
async fn exchange(
    mut req: Request<Incoming>,
    gate: Option<oneshot::Receiver<()>>,
    ctx: &Ctx<'_>,
    leg: &Leg<'_>,
    target: &Uri,
) -> Result<Response<ResponseBody>, Error> {
    *req.version_mut() = Version::HTTP_11;
    // Sent again to another member of a group only when nothing is lost by it: an idempotent method, no body,
    // no upgrade (its client side can't be offered twice).
    let replayable =
        req.method().is_idempotent() && req.body().is_end_stream() && !req.headers().contains_key(header::UPGRADE);
    let (parts, body) = req.into_parts();
    let (body, reading) = Body::from(body).watched(ctx.hop.timeouts.idle, "the request body from the client");
    let body = match gate {
        Some(open) => body.gated(open, Duration::from_millis(EXPECT_CONTINUE_WAIT_MILLIS)),
        None => body,
    };
    let req = Request::from_parts(parts, body);
    let timeout = ctx.hop.timeouts.response_head;
    let head_timeout = || {
        Error::upstream(
            Kind::ResponseTimeout,
            format!("no response head from {} within {:?}", display_authority(target), timeout),
        )
    };
    let response = leg.request(req, replayable);
    tokio::pin!(response);
    match reading {
        None => tokio::time::timeout(timeout, response).await.map_err(|_| head_timeout())?,
        Some(reading) => {
            let stalled = reading.stalled(timeout);
            tokio::select! {
                r = &mut response => r,
                _ = reading.ended => tokio::time::timeout(timeout, response).await.map_err(|_| head_timeout())?,
                () = stalled => Err(Error::upstream(
                    Kind::ResponseTimeout,
                    format!("{} stopped reading the request body for {:?}", display_authority(target), timeout),
                )),
            }
        }
    }
}

/// The 101 path: the upstream must switch to a protocol hopgate offered (else 502, and returning drops the
/// response and with it the upstream connection: it is never piped). Then both upgraded connections become a
/// tunnel, spawned on the task tracker and logged when it ends.
fn switch(
    mut resp: Response<ResponseBody>,
    upgrade: Option<Upgrade>,
    extended: Option<ExtendedConnect>,
    ctx: &Ctx<'_>,
    target: &Uri,
) -> Result<Response<Body>, Error> {
    let Some(Upgrade { offer, client: client_upgrade }) = upgrade else {
        return Err(Error::upstream(
            Kind::UpstreamProtocol,
            format!("{} switched protocols without being asked", display_authority(target)),
        ));
    };
    let proto = resp.headers().get(header::UPGRADE).cloned();
    let switched = upgrade::check_switch(&offer, proto.as_ref())
        .map_err(|why| Error::upstream(Kind::UpstreamProtocol, format!("{} {why}", display_authority(target))))?;
    if let Some(x) = &extended {
        x.check_accept(resp.headers().get(header::SEC_WEBSOCKET_ACCEPT))
            .map_err(|why| Error::upstream(Kind::UpstreamProtocol, format!("{} {why}", display_authority(target))))?;
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let idle = ctx.hop.timeouts.tunnel_idle;
    let (report, watch) = crate::tunnel::report(Some(switched));
    let client = ctx.client;
    ctx.tasks.spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((c, u)) => {
                let mut c = hyper_util::rt::TokioIo::new(c);
                let u = hyper_util::rt::TokioIo::new(u);
                let outcome = report.pump(&mut c, u, idle).await;
                if let crate::tunnel::Ended::Failed(_) = outcome.ended {
                    // An HTTP/2 WebSocket (RFC 8441) whose origin connection failed: its stream is reset with
                    // CONNECT_ERROR as a CONNECT tunnel's is, never ended as if the origin had closed.
                    c.inner_mut().reset_h2_stream(crate::tunnel::H2_CONNECT_ERROR);
                }
                let (up, down) = (outcome.a_to_b, outcome.b_to_a);
                tracing::debug!(%client, up, down, "upgraded connection ended: {:?}", outcome.ended);
                report.outcome(&outcome);
            }
            Err(e) => {
                tracing::debug!(%client, "upgrade failed: {e}");
                report.not_established();
            }
        }
    });
    let (mut parts, _) = resp.into_parts();
    forward_response_head(&mut parts.headers, parts.version, &ctx.hop.via_name);
    if extended.is_some() {
        // RFC 8441 §5: the HTTP/2 client's tunnel opens with a 2xx (hyper then hands over the stream).
        parts.status = StatusCode::OK;
        ExtendedConnect::strip_response(&mut parts.headers);
    } else if let Some(p) = proto {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, p);
    }
    parts.extensions.insert(watch);
    Ok(Response::from_parts(parts, Body::empty()))
}

/// The response head for the client: hop-by-hop fields out, this hop's Via in (`http::forward_response_head`), one
/// Content-Length, transfer codings the client can be sent, a gateway's `Location` rewritten; the body streamed
/// with the response-head time as its idle limit. `version`: the client's request's.
#[inline]
fn response_head(
    resp: Response<ResponseBody>,
    version: Version,
    ctx: &Ctx<'_>,
    leg: &Leg<'_>,
    target: &Uri,
) -> Result<Response<Body>, Error> {
    let (mut parts, body) = resp.into_parts();
    let codings = hop::transfer_codings(&parts.headers);
    forward_response_head(&mut parts.headers, parts.version, &ctx.hop.via_name);
    match codings {
        // hyper accepts a list of equal lengths (`Content-Length: 5, 5`, or the field twice) and checks it for a
        // response with a body; the client is sent the one value.
        None => hop::one_content_length(&mut parts.headers),
        Some(codings) => {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an intermediary removes the latter
            // before forwarding: kept, it would frame the decoded body with a length it does not have.
            parts.headers.remove(header::CONTENT_LENGTH);
            // hyper decoded the chunks only. Codings under them (gzip...) stay named for an HTTP/1.1 client
            // (hyper adds chunked back); an HTTP/1.0 client can't be sent a transfer coding at all.
            if let Some(other) = codings.other
                && !body.is_end_stream()
            {
                if version != Version::HTTP_11 {
                    return Err(Error::upstream(
                        Kind::UpstreamProtocol,
                        format!(
                            "{} answered with transfer coding {other:?}, which an HTTP/1.0 client can't be sent",
                            display_authority(target)
                        ),
                    ));
                }
                parts.headers.insert(header::TRANSFER_ENCODING, other);
            }
        }
    }
    if let Leg::Reverse { room, public: Some(public), proto, .. } = leg
        && parts.headers.contains_key(header::LOCATION)
    {
        room.rewrite_location(&mut parts.headers, public, proto);
    }
    if parts.version == Version::HTTP_2 {
        announce_grpc_trailers(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    // An origin that stops sending mid-body for the response-head time is cut off (the client sees the response
    // end early, never a complete-looking one). The body returns its connection to the pool when it ends; an
    // empty one has done so already.
    let body = if body.is_end_stream() {
        Body::empty()
    } else {
        crate::http::watch(body, ctx.hop.timeouts.response_head, "the response body from the upstream")
    };
    Ok(Response::from_parts(parts, body))
}

/// The trailer fields of gRPC (its PROTOCOL-HTTP2 spec fixes them), announced in `Trailer` on a gRPC response from an
/// HTTP/2 upstream that announced none. HTTP/2 needs no announcement, and gRPC servers send none; but hyper sends an
/// HTTP/1.1 client (one that accepts trailers: `TE: trailers`) only the trailer fields the head announced, and the
/// head goes out before the trailers are known. An HTTP/2 client is sent every trailer field in any case.
fn announce_grpc_trailers(headers: &mut http::HeaderMap) {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().get(..16).is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc")));
    if grpc && !headers.contains_key(header::TRAILER) {
        headers.insert(header::TRAILER, HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"));
    }
}

fn display_authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// Turns the pooled client's error into hopgate's: the connector's own error when it has one, else what
/// hyper saw on the connection.
pub(super) fn client_error(e: SendError, target: &Uri) -> Error {
    let upstream = display_authority(target);
    let e = match e {
        SendError::Connect(ours) => return ours,
        SendError::Hyper(h) => h,
        SendError::Http1(e) => return conn_error(e, &upstream),
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(ours) = s.downcast_ref::<Error>() {
            return Error::new(ours.kind(), ours.side(), ours.detail().to_string());
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                // Our side of the request failed: the client's body stream broke off or stalled.
                let why = h.source().map(|c| c.to_string()).unwrap_or_else(|| "it ended early".into());
                return Error::client(Kind::BadRequest, format!("the request body could not be forwarded: {why}"));
            }
            if h.is_parse() {
                return Error::upstream(Kind::UpstreamProtocol, format!("invalid response from {upstream}"))
                    .with_source(h.to_string());
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Error::upstream(
                    Kind::UpstreamClosedEarly,
                    format!("{upstream} closed the connection before a complete response"),
                );
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Error::upstream(
                Kind::UpstreamClosedEarly,
                format!("connection to {upstream} failed: {}", io.kind()),
            )
            .with_source(io.to_string());
        }
        src = s.source();
    }
    Error::new(Kind::UpstreamClosedEarly, Side::Upstream, format!("request to {upstream} failed")).with_source(e)
}

/// What hopgate's own HTTP/1.1 connection saw, as hopgate's error: the same kinds, statuses and words hyper's
/// client errors were given (above).
fn conn_error(e: ConnError, upstream: &str) -> Error {
    match e {
        ConnError::Body(why) => {
            if let Some(ours) = why.downcast_ref::<Error>() {
                return Error::new(ours.kind(), ours.side(), ours.detail().to_string());
            }
            Error::client(Kind::BadRequest, format!("the request body could not be forwarded: {why}"))
        }
        ConnError::Head(h) => {
            let why = match h {
                crate::h1::HeadError::TooLarge => "message head is too large".to_string(),
                other => format!("invalid HTTP response head: {other}"),
            };
            Error::upstream(Kind::UpstreamProtocol, format!("invalid response from {upstream}")).with_source(why)
        }
        ConnError::Flooded => Error::upstream(
            Kind::UpstreamProtocol,
            format!("{upstream} sent more than {MAX_INFORMATIONAL} informational (1xx) responses to one request"),
        ),
        ConnError::Closed => Error::upstream(
            Kind::UpstreamClosedEarly,
            format!("{upstream} closed the connection before a complete response"),
        ),
        ConnError::Io(io) => {
            Error::upstream(Kind::UpstreamClosedEarly, format!("connection to {upstream} failed: {}", io.kind()))
                .with_source(io.to_string())
        }
    }
}
