//! The controller <-> agent wire contract: generated gRPC code and its conversions to domain types.
#![forbid(unsafe_code)]

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("tokengun.v1");
}

pub use generated::*;
pub mod convert;
pub mod stored;

/// Bump on any change of the .proto that an older peer could misread.
pub const PROTOCOL_VERSION: u32 = 2;
