//! The named cases: one per rule of RFC 9113 a client can break, with what
//! a correct server answers.

use super::*;

/// Every named case, in the modes where it makes sense.
pub fn named_cases() -> Vec<Case> {
    use code::*;
    use Expect::*;
    let mut v: Vec<Case> = Vec::new();
    let mut both = |name: &str, class: &'static str, bytes: Vec<u8>, expect: Expect| {
        v.push(Case::new(
            name,
            class,
            Mode::Settled,
            bytes.clone(),
            expect.clone(),
        ));
        v.push(Case::new(
            &format!("{name}/early"),
            class,
            Mode::Early,
            bytes,
            expect,
        ));
    };
    let get1 = request(1, "/whoami", true);
    let post1 = request(1, "/whoami?echo", false);

    both("valid_request", "valid", get1.clone(), Responses(vec![1]));
    both(
        "valid_three_requests",
        "valid",
        [
            request(1, "/whoami", true),
            request(3, "/whoami", true),
            request(5, "/whoami", true),
        ]
        .concat(),
        Responses(vec![1, 3, 5]),
    );
    both(
        "frame_too_large_data",
        "frame_too_large",
        [
            post1.clone(),
            frame_claiming(kind::DATA, 0, 1, MAX_FRAME + 1, MAX_FRAME + 1),
        ]
        .concat(),
        Stream(1, vec![FRAME_SIZE_ERROR]),
    );
    both(
        "frame_too_large_headers",
        "frame_too_large",
        frame_claiming(kind::HEADERS, END_HEADERS, 1, 20000, 20000),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "frame_too_large_settings",
        "frame_too_large",
        frame_claiming(kind::SETTINGS, 0, 0, 16386, 16386),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "frame_too_large_max_len",
        "frame_too_large",
        frame_claiming(kind::DATA, 0, 1, 0xff_ffff, 1000),
        Conn(vec![FRAME_SIZE_ERROR, PROTOCOL_ERROR]),
    );
    both(
        "even_stream_id",
        "even_stream",
        request(2, "/whoami", true),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "decreasing_stream_id",
        "decreasing_stream",
        [request(5, "/whoami", true), request(3, "/whoami", true)].concat(),
        RejectOrIgnore(3, vec![PROTOCOL_ERROR, STREAM_CLOSED]),
    );
    both(
        "continuation_without_headers",
        "stray_continuation",
        frame(
            kind::CONTINUATION,
            END_HEADERS,
            1,
            &hpack_block(&request_fields("GET", "/whoami")),
        ),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "continuation_after_end_headers",
        "stray_continuation",
        [
            get1.clone(),
            frame(kind::CONTINUATION, END_HEADERS, 1, &[0x82]),
        ]
        .concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "header_block_interrupted_by_ping",
        "interrupted_block",
        [
            frame(
                kind::HEADERS,
                END_STREAM,
                1,
                &hpack_block(&request_fields("GET", "/whoami")),
            ),
            frame(kind::PING, 0, 0, b"intrrupt"),
        ]
        .concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "header_block_interrupted_by_other_stream",
        "interrupted_block",
        [
            frame(
                kind::HEADERS,
                END_STREAM,
                1,
                &hpack_block(&request_fields("GET", "/whoami")),
            ),
            request(3, "/whoami", true),
        ]
        .concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "settings_on_stream",
        "control_on_stream",
        frame(kind::SETTINGS, 0, 1, &[]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "settings_ack_on_stream",
        "control_on_stream",
        frame(kind::SETTINGS, ACK, 3, &[]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "ping_on_stream",
        "control_on_stream",
        frame(kind::PING, 0, 1, b"12345678"),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "goaway_on_stream",
        "control_on_stream",
        frame(kind::GOAWAY, 0, 1, &[0, 0, 0, 0, 0, 0, 0, 0]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "data_on_idle_stream",
        "idle_stream",
        frame(kind::DATA, 0, 1, b"hello"),
        Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]),
    );
    both(
        "data_on_idle_stream_end",
        "idle_stream",
        frame(kind::DATA, END_STREAM, 7, b"hello"),
        Conn(vec![PROTOCOL_ERROR, STREAM_CLOSED]),
    );
    both(
        "window_update_on_idle_stream",
        "idle_stream",
        frame(kind::WINDOW_UPDATE, 0, 9, &u32be(100)),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "rst_stream_on_idle_stream",
        "idle_stream",
        frame(kind::RST_STREAM, 0, 11, &u32be(CANCEL)),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "settings_bad_length",
        "bad_length",
        frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0]),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "settings_ack_with_payload",
        "bad_length",
        frame(kind::SETTINGS, ACK, 0, &[0, 4, 0, 0, 0, 1]),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "ping_bad_length",
        "bad_length",
        frame(kind::PING, 0, 0, b"1234567"),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "window_update_bad_length",
        "bad_length",
        frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "rst_stream_bad_length",
        "bad_length",
        [post1.clone(), frame(kind::RST_STREAM, 0, 1, &[0, 0, 8])].concat(),
        Conn(vec![FRAME_SIZE_ERROR]),
    );
    both(
        "priority_bad_length",
        "bad_length",
        frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 0]),
        Stream(3, vec![FRAME_SIZE_ERROR]),
    );
    both(
        "window_update_zero_increment",
        "flow_control",
        frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0)),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "window_update_overflow",
        "flow_control",
        [
            frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0x7fff_ffff)),
            frame(kind::WINDOW_UPDATE, 0, 0, &u32be(0x7fff_ffff)),
        ]
        .concat(),
        Conn(vec![FLOW_CONTROL_ERROR]),
    );
    both(
        "settings_enable_push_2",
        "bad_settings",
        settings(&[(0x2, 2)]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "settings_initial_window_too_big",
        "bad_settings",
        settings(&[(0x4, 0x8000_0000)]),
        Conn(vec![FLOW_CONTROL_ERROR]),
    );
    both(
        "settings_max_frame_size_too_small",
        "bad_settings",
        settings(&[(0x5, 100)]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "bad_hpack",
        "bad_hpack",
        frame(
            kind::HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        Conn(vec![COMPRESSION_ERROR]),
    );
    // A dynamic table size update whose integer never ends (0x3f wants more
    // bytes): panicked the hpack crate's decoder (found by userspace/fuzz).
    both(
        "bad_hpack_truncated_integer",
        "bad_hpack",
        frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &[0x3f]),
        Conn(vec![COMPRESSION_ERROR]),
    );
    both(
        "bad_hpack_index",
        "bad_hpack",
        frame(
            kind::HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &[0x82, 0xbf, 0x84],
        ),
        Conn(vec![COMPRESSION_ERROR]),
    );
    both(
        "push_promise_from_client",
        "push_promise",
        frame(kind::PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]),
        Conn(vec![PROTOCOL_ERROR]),
    );
    both(
        "padding_too_long",
        "padding",
        [
            post1.clone(),
            frame(kind::DATA, PADDED, 1, &[10, b'a', b'b']),
        ]
        .concat(),
        Conn(vec![PROTOCOL_ERROR]),
    );
    {
        let mut p = vec![0, 0, 0, 1, 15];
        p.extend(hpack_block(&request_fields("GET", "/whoami")));
        both(
            "self_dependency",
            "priority",
            frame(
                kind::HEADERS,
                END_HEADERS | END_STREAM | PRIORITY_FLAG,
                1,
                &p,
            ),
            Stream(1, vec![PROTOCOL_ERROR]),
        );
    }
    both(
        "data_after_end_stream",
        "closed_stream",
        [get1.clone(), frame(kind::DATA, 0, 1, b"late")].concat(),
        Stream(1, vec![STREAM_CLOSED, PROTOCOL_ERROR]),
    );
    both(
        "unknown_frame_type_stream_0",
        "unknown_type",
        frame(0x20, 0xff, 0, b"ignore me"),
        Alive,
    );
    both(
        "unknown_frame_type_on_stream",
        "unknown_type",
        [frame(0x21, 0, 1, b"ignore me"), get1.clone()].concat(),
        Responses(vec![1]),
    );
    // 0xfa is the frame type rotor's agent uses on its private injector socket.
    both(
        "rotor_private_frame_type",
        "unknown_type",
        frame(0xfa, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
        Alive,
    );
    both(
        "rotor_private_frame_type_on_stream",
        "unknown_type",
        [frame(0xfa, 0, 1, &[0, 0, 0, 1]), get1.clone()].concat(),
        Responses(vec![1]),
    );
    {
        let mut fields = request_fields("GET", "/whoami");
        for k in 0..80 {
            fields.push(("x-big", format!("{k:04}-{}", "v".repeat(1000))));
        }
        both(
            "header_block_over_64k",
            "big_block",
            headers_frames(1, &hpack_block(&fields), true),
            NoHang,
        );
    }
    {
        let mut fields = request_fields("GET", "/whoami");
        for k in 0..40 {
            fields.push(("x-big", format!("{k:04}-{}", "v".repeat(1000))));
        }
        both(
            "header_block_40k_continuations",
            "big_block",
            headers_frames(1, &hpack_block(&fields), true),
            Responses(vec![1]),
        );
    }
    {
        let mut b = Vec::new();
        for i in 0..500u32 {
            b.extend(request(1 + 2 * i, "/whoami", false));
            b.extend(frame(kind::RST_STREAM, 0, 1 + 2 * i, &u32be(CANCEL)));
        }
        b.extend(request(1001, "/whoami", true));
        both("rapid_reset", "rapid_reset", b, NoHang);
    }
    // Without a handshake.
    v.push(Case::new(
        "bad_preface_typo",
        "bad_preface",
        Mode::Raw,
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        Conn(vec![PROTOCOL_ERROR]),
    ));
    v.push(Case::new(
        "bad_preface_http2_then_garbage",
        "bad_preface",
        Mode::Raw,
        [&PREFACE[..10], &b"\x00\x01garbage\xff\xfe"[..]].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    ));
    v.push(Case::new(
        "preface_only_then_fin",
        "truncated",
        Mode::Raw,
        PREFACE[..16].to_vec(),
        Closed,
    ));
    v.push(Case::new(
        "no_settings_after_preface",
        "bad_preface",
        Mode::Raw,
        [PREFACE, &frame(kind::PING, 0, 0, b"12345678")[..]].concat(),
        Conn(vec![PROTOCOL_ERROR]),
    ));
    for mode in [Mode::Settled, Mode::Early] {
        let sfx = if mode == Mode::Early { "/early" } else { "" };
        v.push(Case::new(
            &format!("truncated_frame_header{sfx}"),
            "truncated",
            mode,
            get1[..5].to_vec(),
            Closed,
        ));
        v.push(Case::new(
            &format!("truncated_frame_payload{sfx}"),
            "truncated",
            mode,
            get1[..get1.len() - 3].to_vec(),
            Closed,
        ));
        v.push(Case::new(
            &format!("truncated_data{sfx}"),
            "truncated",
            mode,
            [
                post1.clone(),
                frame_claiming(kind::DATA, END_STREAM, 1, 1000, 200),
            ]
            .concat(),
            Closed,
        ));
    }
    // A client that stops reading: 16 downloads of /big with windows wide open, unread.
    {
        let mut b = settings(&[(0x4, 0x7fff_ffff)]);
        b.extend(frame(
            kind::WINDOW_UPDATE,
            0,
            0,
            &u32be(0x7fff_ffff - 65535),
        ));
        let streams: Vec<u32> = (0..16).map(|i| 1 + 2 * i).collect();
        for s in &streams {
            b.extend(request(*s, "/big", true));
        }
        let mut c = Case::new(
            "stop_reading",
            "stop_reading",
            Mode::Settled,
            b,
            Responses(streams),
        );
        c.stop_reading = true;
        v.push(c);
    }
    v
}
