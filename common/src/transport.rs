//! The controller <-> agent transport as both ends set it up: the message size limit, and the
//! words of a transport failure.

/// Largest gRPC message either side accepts: a plan carries its whole workload.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The deepest cause's text of an error chain ("connection refused" rather than "client error").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut text = e.to_string();
    while let Some(next) = cur.source() {
        text = next.to_string();
        cur = next;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_deepest_cause_speaks() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(root_cause(&e), "connection refused");
        assert_eq!(root_cause(&std::io::Error::other("alone")), "alone");
    }
}
