//! Putting a future on the heap without copying it there.
//!
//! `Box::pin(fut)` builds `fut` on the stack and then copies all of it into the allocation: an async fn's state
//! is as large as its largest await point (kilobytes for a request's), though only its arguments are written
//! before the first poll. Writing the expression's value straight into a fresh uninitialised allocation lets the
//! compiler build it in place, with no copy (bench/profile callgrind: about 400 instructions per boxed request
//! future). A macro, not a function: passed to a function, even an inlined one, the value is built on the stack
//! first and copied again (measured).

/// `Box::pin(expr)`, built in place ([`self`]).
macro_rules! pinned {
    ($value:expr) => {
        ::std::boxed::Box::into_pin(::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $value))
    };
}
pub(crate) use pinned;
