//! The futures of [`Guard::resolve`](crate::Guard::resolve), of the [`Guarded`](crate::Guarded)
//! service and of the [`Required`](crate::Required) service.

pub use crate::guard::ResolveFuture;
pub use crate::layer::{RequireFuture, ResponseFuture};
