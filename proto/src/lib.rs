//! # Meridian wire protocol
//!
//! Every message that crosses a process boundary — node to node, client to node — is defined
//! in `proto/meridian/v1/*.proto` and generated here by `build.rs` (prost messages, tonic
//! clients and servers). The `.proto` files are the contract: a field is added with a new tag
//! and never reused, so nodes of adjacent versions interoperate during a rolling upgrade.
//!
//! Generated code, plus [`auth`]: how a request carries its credentials, and [`limits`]: the
//! sizes every client and node agrees on — both part of the contract too. Conversions to and
//! from the core types live in the crates that own those types, so this crate depends on
//! nothing of ours.

pub mod auth;
pub mod limits;

/// Version 1 of the protocol.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("meridian.v1");
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let req = PingRequest { from: Some(Sender { cluster_id: "c-1".into(), node_id: 7 }) };
        let bytes = req.encode_to_vec();
        assert_eq!(PingRequest::decode(bytes.as_slice()).expect("decodes"), req);
        // Truncated and random bytes must decode to an error, never panic.
        assert!(PingRequest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(PingRequest::decode(&[0xFF, 0xFF, 0xFF, 0xFF][..]).is_err());
    }
}
