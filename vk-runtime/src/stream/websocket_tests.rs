use super::*;

#[test]
fn negotiation_follows_the_client_order() {
    assert_eq!(
        negotiate(["v5.channel.k8s.io, v4.channel.k8s.io"], EXEC_PROTOCOLS),
        Ok(Some(WsProtocol::V5))
    );
    assert_eq!(
        negotiate(
            ["base64.channel.k8s.io", "v4.channel.k8s.io"],
            EXEC_PROTOCOLS
        ),
        Ok(Some(WsProtocol::V1Base64))
    );
    assert_eq!(negotiate([], EXEC_PROTOCOLS), Ok(None));
    assert!(matches!(
        negotiate(["v5.channel.k8s.io"], PORT_FORWARD_PROTOCOLS),
        Err(WsError::Unsupported { .. })
    ));
    assert_eq!(
        negotiate(["v4.base64.channel.k8s.io"], PORT_FORWARD_PROTOCOLS),
        Ok(Some(WsProtocol::V4Base64))
    );
}

#[test]
fn binary_framing() {
    assert_eq!(
        encode(WsProtocol::V4, STDOUT, b"hi"),
        WireMessage::Binary(Bytes::from_static(b"\x01hi"))
    );
    assert_eq!(
        encode(WsProtocol::V5, ERROR, b""),
        WireMessage::Binary(Bytes::from_static(b"\x03"))
    );
    assert_eq!(
        decode_binary(WsProtocol::V4, &Bytes::from_static(b"\x00abc")),
        Ok(Some(ChannelFrame::Data {
            channel: STDIN,
            payload: Bytes::from_static(b"abc")
        }))
    );
    assert_eq!(decode_binary(WsProtocol::V4, &Bytes::new()), Ok(None));
}

#[test]
fn v5_close_signal() {
    assert_eq!(
        decode_binary(WsProtocol::V5, &Bytes::from_static(&[255, 0])),
        Ok(Some(ChannelFrame::Close { channel: 0 }))
    );
    assert_eq!(
        decode_binary(WsProtocol::V5, &Bytes::from_static(&[255])),
        Err(WsError::BadClose)
    );
    // Before v5, 255 is just a channel number.
    assert!(matches!(
        decode_binary(WsProtocol::V4, &Bytes::from_static(&[255, 0])),
        Ok(Some(ChannelFrame::Data { channel: 255, .. }))
    ));
    assert_eq!(
        encode_close(WsProtocol::V5, STDIN),
        Some(WireMessage::Binary(Bytes::from_static(&[255, 0])))
    );
    assert_eq!(encode_close(WsProtocol::V4, STDIN), None);
}

#[test]
fn base64_framing() {
    assert_eq!(
        encode(WsProtocol::V4Base64, STDERR, b"hello"),
        WireMessage::Text("2aGVsbG8=".into())
    );
    assert_eq!(
        decode_text(WsProtocol::V1Base64, "0aGVsbG8="),
        Ok(Some(ChannelFrame::Data {
            channel: STDIN,
            payload: Bytes::from_static(b"hello")
        }))
    );
    assert_eq!(
        decode_text(WsProtocol::V1Base64, "0***"),
        Err(WsError::BadBase64)
    );
    assert_eq!(
        decode_text(WsProtocol::V1Base64, "\u{1}x"),
        Err(WsError::BadChannel(1))
    );
    // A multi-byte first character must not panic.
    assert!(decode_text(WsProtocol::V4Base64, "é").is_err());
}

#[test]
fn port_prefix_is_little_endian() {
    assert_eq!(port_prefix(8080), [0x90, 0x1f]);
}
