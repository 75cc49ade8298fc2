//! Byte encodings of SQL values: [`key`] for primary keys (order-preserving, prefix-free) and
//! [`row`] for the rest of a row (compact, versioned). Both decoders treat their input as
//! untrusted: bad bytes are an error naming what is wrong, never a panic.

pub mod key;
pub mod row;

/// A decode failure: what was wrong with the bytes. Callers wrap it with which key or row it was.
pub type DecodeResult<T> = std::result::Result<T, String>;
