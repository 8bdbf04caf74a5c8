//! How the streams of an upstream that is gone end, as the client sees
//! them. What a code promises decides it: REFUSED_STREAM says "not
//! processed" (RFC 9113 §8.7), and grpc-js, grpc-java and curl resend such
//! a stream by themselves. So a stream is refused only when its endpoint
//! cannot have processed it: above the last stream id of the endpoint's
//! GOAWAY, or bound to an upstream that never opened (its frames never left
//! the agent). A stream the endpoint took and had not answered when its
//! connection ended may have been acted on, or may be what killed it: a
//! refusal would have a request that crashes pods resent to the next pod.
//! It gets a 502 response instead, which gRPC clients read as UNAVAILABLE
//! and retry only by their policy, as a client straight to the endpoint
//! sees its connection fail. Answered streams are cancelled.

use bytes::BytesMut;

use crate::ebpf::abi::{STREAM_ANSWERED, STREAM_CLIENT_END};
use crate::h2::frame::{self, error_code};

/// Why an upstream's streams end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gone {
    /// Its endpoint's GOAWAY: streams above this id it did not process.
    Above(u32),
    /// Its connection never opened: no stream of it left the agent.
    NeverOpened,
    /// Its connection ended (closed, reset, or dropped by the agent)
    /// after it opened.
    Lost,
}

impl Gone {
    /// Streams above this id end; those at or below it carry on.
    pub fn above(self) -> u32 {
        match self {
            Gone::Above(last) => last,
            Gone::NeverOpened | Gone::Lost => 0,
        }
    }
}

/// What the client gets for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    Reset(u32),
    /// The agent's `:status 502`; `stop_request`: the client was still
    /// sending, and is asked to stop without error (RFC 9113 §8.1).
    BadGateway {
        stop_request: bool,
    },
}

/// The status of the agent's response to a stream whose endpoint's
/// connection ended before it answered.
const BAD_GATEWAY: u16 = 502;

/// How a stream ends: `flags` is the kernel's entry for it, None when the
/// kernel has none. A stream bound in the agent without an entry ended
/// already (an entry goes with its stream; the agent's record may outlive
/// it), so a response could follow its END_STREAM, which the client must
/// take as a connection error (RFC 9113 §5.1); a reset, which it ignores
/// on a closed stream, ends whatever else there could be.
pub(super) fn stream_end(flags: Option<u32>, gone: Gone) -> StreamEnd {
    match flags {
        Some(f) if f & STREAM_ANSWERED != 0 => StreamEnd::Reset(error_code::CANCEL),
        _ if gone != Gone::Lost => StreamEnd::Reset(error_code::REFUSED_STREAM),
        None => StreamEnd::Reset(error_code::CANCEL),
        Some(f) => StreamEnd::BadGateway {
            stop_request: f & STREAM_CLIENT_END == 0,
        },
    }
}

/// The frames of `end` for `stream`.
pub(super) fn write(out: &mut BytesMut, stream: u32, end: StreamEnd) {
    match end {
        StreamEnd::Reset(code) => frame::rst_stream(out, stream, code),
        StreamEnd::BadGateway { stop_request } => {
            frame::status_response(out, stream, BAD_GATEWAY);
            if stop_request {
                frame::rst_stream(out, stream, error_code::NO_ERROR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame::{flag, kind, FrameHeader};

    #[test]
    fn only_streams_the_endpoint_cannot_have_processed_are_refused() {
        let refused = StreamEnd::Reset(error_code::REFUSED_STREAM);
        let cancel = StreamEnd::Reset(error_code::CANCEL);
        for gone in [Gone::Above(7), Gone::NeverOpened] {
            assert_eq!(stream_end(Some(0), gone), refused, "{gone:?}");
            assert_eq!(stream_end(None, gone), refused, "{gone:?}");
            assert_eq!(stream_end(Some(STREAM_ANSWERED), gone), cancel);
        }
        assert_eq!(
            stream_end(Some(0), Gone::Lost),
            StreamEnd::BadGateway { stop_request: true }
        );
        assert_eq!(
            stream_end(Some(STREAM_CLIENT_END), Gone::Lost),
            StreamEnd::BadGateway {
                stop_request: false
            }
        );
        assert_eq!(stream_end(Some(STREAM_ANSWERED), Gone::Lost), cancel);
        assert_eq!(
            stream_end(None, Gone::Lost),
            cancel,
            "ended already: no response"
        );
        assert_eq!((Gone::Above(7).above(), Gone::Lost.above()), (7, 0));
    }

    #[test]
    fn a_bad_gateway_ends_the_stream_and_stops_a_request_still_sent() {
        let frames = |end| {
            let mut out = BytesMut::new();
            write(&mut out, 5, end);
            let mut seen = Vec::new();
            let mut rest = &out[..];
            while let Some(h) = FrameHeader::parse(rest) {
                seen.push((h.kind, h.flags, rest[9..9 + h.len as usize].to_vec()));
                rest = &rest[9 + h.len as usize..];
            }
            seen
        };
        let headers_flags = flag::END_HEADERS | flag::END_STREAM;
        let sending = frames(StreamEnd::BadGateway { stop_request: true });
        assert_eq!(sending.len(), 2);
        assert_eq!((sending[0].0, sending[0].1), (kind::HEADERS, headers_flags));
        assert_eq!(sending[1], (kind::RST_STREAM, 0, vec![0, 0, 0, 0]));
        let done = frames(StreamEnd::BadGateway {
            stop_request: false,
        });
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, kind::HEADERS);
    }
}
