//! Allocation counts on the hot path, with a counting global allocator: the valid static-key check
//! allocates nothing, and the layer adds only the hand-off of its result to the extractors.
//!
//! The counting allocator needs `unsafe` (implementing `GlobalAlloc`); it lives in this test only.
//! The library itself is `#![forbid(unsafe_code)]`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use axum_keyguard::{Authenticated, Guard, KeyId, Keys, Source};
use http::Request;
use tower::ServiceExt;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let value = f();
    (ALLOCATIONS.with(Cell::get) - before, value)
}

const KEY: &str = "bench-key-0123456789abcdefghijklmnopqrstuv";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[test]
fn resolving_a_valid_static_key_allocates_nothing() {
    let guard = Guard::builder()
        .with_verifier(Keys::new([KEY, "another-key-0123456789"]).expect("keys"))
        .with_sources([
            Source::query("session_api_key").on_rest(true),
            Source::header("x-session-api-key").expect("name"),
            Source::bearer(),
        ])
        .build()
        .expect("guard");
    let runtime = runtime();
    let requests = [
        Request::get("/api")
            .header("host", "localhost")
            .header("x-session-api-key", KEY),
        Request::get("/api")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {KEY}")),
        Request::get(format!("/api?session_api_key={KEY}")).header("host", "localhost"),
    ];
    for request in requests {
        let (parts, ()) = request.body(()).expect("request").into_parts();
        // Warm up lazily initialised statics (tracing's callsites) outside the count.
        runtime.block_on(guard.resolve(&parts)).expect("valid");
        let (count, verified) = allocations(|| runtime.block_on(guard.resolve(&parts)));
        assert!(verified.is_ok());
        assert_eq!(count, 0, "allocations resolving {:?}", parts.uri);
    }
}

#[test]
fn the_layer_adds_only_the_hand_off_of_its_result() {
    let guard = Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .build()
        .expect("guard");
    let bare: Router = Router::new().route("/api", get(|| async { "ok" }));
    let guarded: Router = Router::new()
        .route(
            "/api",
            get(|Authenticated(_key): Authenticated<KeyId>| async { "ok" }),
        )
        .route_layer(guard.layer());
    let layer_floor: Router = Router::new()
        .route("/api", get(|| async { "ok" }))
        .route_layer(tower::layer::layer_fn(|service| service));
    let runtime = runtime();
    let count = |app: &Router| {
        let request = || {
            Request::get("/api")
                .header("host", "localhost")
                .header("x-session-api-key", KEY)
                .body(Body::empty())
                .expect("request")
        };
        let response = runtime.block_on(app.clone().oneshot(request()));
        assert_eq!(response.expect("infallible").status(), 200);
        let (count, response) = allocations(|| runtime.block_on(app.clone().oneshot(request())));
        assert_eq!(response.expect("infallible").status(), 200);
        count
    };
    let (bare, floor, guarded) = (count(&bare), count(&layer_floor), count(&guarded));
    // The hand-off: the result's box in `http::Extensions` and the map's growth (axum has already
    // put three entries in it, so a fourth grows the table). The third: a router without
    // `with_state` applies route layers per request, and boxes a clone of the layer to do so
    // (`LayerFn::clone_box`), which costs nothing for the zero-sized pass-through layer but one
    // small box for a layer that holds a guard. The fourth: the layer answers with its own body
    // type (the inner body, or a rejection's text, so that it wraps any inner service), which
    // axum boxes into its `Body` when the route turns the response into its own. Around a bare
    // `service_fn` it is exactly two (below).
    assert!(
        guarded <= floor + 4,
        "bare router {bare}, pass-through layer {floor}, guard layer {guarded}"
    );
}

#[test]
fn around_a_bare_service_the_layer_adds_exactly_the_hand_off() {
    use tower::Layer;
    let guard = Guard::builder()
        .with_verifier(Keys::new([KEY]).expect("keys"))
        .build()
        .expect("guard");
    let inner = tower::service_fn(|_request: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(axum::response::Response::new(Body::empty()))
    });
    let guarded = guard.layer().layer(inner);
    // Three extensions already, as axum's router leaves them.
    let request = || {
        let mut request = Request::get("/api")
            .header("host", "localhost")
            .header("x-session-api-key", KEY)
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(1u8);
        request.extensions_mut().insert(2u16);
        request.extensions_mut().insert(3u32);
        request
    };
    let runtime = runtime();
    let _ = runtime.block_on(guarded.clone().oneshot(request()));
    let (built, _) = allocations(request);
    let (bare, _) = allocations(|| runtime.block_on(inner.oneshot(request())));
    let (with_guard, response) = allocations(|| runtime.block_on(guarded.oneshot(request())));
    assert_eq!(response.expect("infallible").status(), 200);
    assert_eq!(
        with_guard - built,
        bare - built + 2,
        "the result's box and the map's growth, nothing else"
    );
}
