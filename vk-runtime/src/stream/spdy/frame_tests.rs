use super::*;

fn round_trip(frame: Frame) {
    let mut buf = BytesMut::new();
    encode(&frame, &mut buf);
    let (parsed, used) = parse(&buf, MAX_LEN_FIELD).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(parsed, frame);
    // Every strict prefix asks for more bytes.
    for cut in 0..buf.len() {
        assert!(
            parse(&buf[..cut], MAX_LEN_FIELD).unwrap().is_none(),
            "prefix {cut} of {frame:?}"
        );
    }
}

#[test]
fn every_frame_type_round_trips() {
    let block = Bytes::from_static(b"\x78\x9c compressed");
    round_trip(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 7,
        slot: 0,
        flags: FLAG_FIN,
        header_block: block.clone(),
    });
    round_trip(Frame::SynStream {
        stream_id: 0x7FFF_FFFF,
        associated_to: 3,
        priority: 0,
        slot: 9,
        flags: FLAG_UNIDIRECTIONAL,
        header_block: Bytes::new(),
    });
    round_trip(Frame::SynReply {
        stream_id: 3,
        flags: 0,
        header_block: block.clone(),
    });
    round_trip(Frame::RstStream {
        stream_id: 5,
        status: rst::CANCEL,
    });
    round_trip(Frame::Settings {
        flags: 1,
        entries: vec![
            Setting {
                flags: 1,
                id: 7,
                value: 65536,
            },
            Setting {
                flags: 0,
                id: 4,
                value: 100,
            },
        ],
    });
    round_trip(Frame::Settings {
        flags: 0,
        entries: vec![],
    });
    round_trip(Frame::Ping { id: 1 });
    round_trip(Frame::GoAway {
        last_good_stream_id: 9,
        status: goaway::PROTOCOL_ERROR,
    });
    round_trip(Frame::Headers {
        stream_id: 7,
        flags: FLAG_FIN,
        header_block: block,
    });
    round_trip(Frame::WindowUpdate {
        stream_id: 1,
        delta: 4096,
    });
    round_trip(Frame::Data {
        stream_id: 1,
        flags: FLAG_FIN,
        data: Bytes::from_static(b"hello"),
    });
    round_trip(Frame::Data {
        stream_id: 3,
        flags: 0,
        data: Bytes::new(),
    });
}

#[test]
fn known_wire_bytes() {
    // PING id 1: control bit + version 3, type 6, length 4.
    let mut buf = BytesMut::new();
    encode(&Frame::Ping { id: 1 }, &mut buf);
    assert_eq!(
        &buf[..],
        &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]
    );
    // DATA on stream 5 with FIN.
    let mut buf = BytesMut::new();
    encode(
        &Frame::Data {
            stream_id: 5,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        },
        &mut buf,
    );
    assert_eq!(&buf[..], &[0, 0, 0, 5, 0x01, 0, 0, 2, b'a', b'b']);
}

#[test]
fn reserved_bits_are_masked() {
    let raw = [
        0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 5,
    ];
    let (frame, _) = parse(&raw, 1024).unwrap().unwrap();
    assert_eq!(
        frame,
        Frame::RstStream {
            stream_id: 0x7FFF_FFFF,
            status: 5
        }
    );
}

#[test]
fn oversized_frames_fail_from_the_header() {
    let raw = [0, 0, 0, 1, 0, 0x10, 0, 0];
    assert!(matches!(
        parse(&raw, 1024),
        Err(FrameError::TooLarge {
            len: 0x100000,
            max: 1024
        })
    ));
}

#[test]
fn malformed_frames_are_rejected() {
    let bad_version = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
    assert!(matches!(
        parse(&bad_version, 1024),
        Err(FrameError::UnsupportedVersion(2))
    ));
    let short_ping = [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 1];
    assert!(matches!(
        parse(&short_ping, 1024),
        Err(FrameError::Malformed { .. })
    ));
    let short_syn = [0x80, 0x03, 0x00, 0x01, 0, 0, 0, 4, 0, 0, 0, 1];
    assert!(matches!(
        parse(&short_syn, 1024),
        Err(FrameError::Malformed { .. })
    ));
    let settings_count_lies = [0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF];
    assert!(matches!(
        parse(&settings_count_lies, 1024),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn unknown_control_types_are_skipped() {
    let raw = [
        0x80, 0x03, 0x00, 0x0A, 0, 0, 0, 2, 9, 9, 0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 3,
    ];
    let (frame, used) = parse(&raw, 1024).unwrap().unwrap();
    assert_eq!(frame, Frame::UnknownControl { frame_type: 10 });
    let (frame, _) = parse(&raw[used..], 1024).unwrap().unwrap();
    assert_eq!(frame, Frame::Ping { id: 3 });
}

#[test]
fn codec_decodes_a_byte_at_a_time() {
    let mut wire = BytesMut::new();
    encode(&Frame::Ping { id: 7 }, &mut wire);
    encode(
        &Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"xyz"),
        },
        &mut wire,
    );
    let mut codec = FrameCodec { max_len: 1024 };
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in wire.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
    }
    assert_eq!(
        frames,
        vec![
            Frame::Ping { id: 7 },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"xyz")
            }
        ]
    );
}
