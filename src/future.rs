//! The futures of [`Guard::resolve`](crate::Guard::resolve) and of the
//! [`Guarded`](crate::Guarded) service.

pub use crate::guard::ResolveFuture;
pub use crate::layer::ResponseFuture;
