use super::*;

#[test]
fn reasons_map_to_the_codes_clients_act_on() {
    let cases: &[(StreamError, Code, &str)] = &[
        (
            StreamError::NoOpening { expected: "hello", within: Duration::from_secs(10) },
            Code::DeadlineExceeded,
            "no hello within 10s",
        ),
        (
            StreamError::WrongOpening { expected: "subscribe" },
            Code::InvalidArgument,
            "the first message must be subscribe",
        ),
        (StreamError::protocol("hello sent twice"), Code::InvalidArgument, "hello sent twice"),
        (
            StreamError::Oversized { size: "5000 bytes > 4096".into() },
            Code::ResourceExhausted,
            "(5000 bytes > 4096)",
        ),
        (StreamError::Storage, Code::Unavailable, "collector storage unavailable; retry"),
        (StreamError::ShuttingDown, Code::Unavailable, "collector shutting down; reconnect"),
        (
            StreamError::Superseded("superseded by a newer session of this agent"),
            Code::Aborted,
            "newer session",
        ),
        (StreamError::PeerGone("agent"), Code::Cancelled, "agent went away"),
        (StreamError::Unauthenticated("no URI SAN".into()), Code::Unauthenticated, "no URI SAN"),
        (StreamError::PermissionDenied("not an operator".into()), Code::PermissionDenied, "not an operator"),
    ];
    for (error, code, text) in cases {
        let status = Status::from(error.clone());
        assert_eq!(status.code(), *code, "{error:?}");
        assert!(status.message().contains(text), "{error:?}: {}", status.message());
    }
}
