use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Peer {
    io: tokio::io::DuplexStream,
    buf: BytesMut,
    enc: HeaderEncoder,
}

impl Peer {
    async fn send(&mut self, f: Frame) {
        let mut out = BytesMut::new();
        frame::encode(&f, &mut out);
        self.io.write_all(&out).await.unwrap();
    }
    async fn syn(&mut self, id: u32, kind: &str, flags: u8) {
        let mut h = Headers::new();
        h.insert("streamtype", kind);
        let header_block = self.enc.encode(&h).unwrap();
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags,
            header_block,
        })
        .await;
    }
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = frame::parse(&self.buf, 1 << 24).unwrap() {
                let _ = self.buf.split_to(used);
                return Some(f);
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn pair(config: SessionConfig) -> (Session, Peer) {
    let (a, b) = tokio::io::duplex(1 << 16);
    (
        Session::start(a, config),
        Peer {
            io: b,
            buf: BytesMut::new(),
            enc: HeaderEncoder::new(),
        },
    )
}

#[tokio::test]
async fn streams_ping_data_and_fin() {
    let (mut session, mut peer) = pair(SessionConfig::default());
    peer.syn(1, "stdin", 0).await;
    peer.send(Frame::Ping { id: 7 }).await;
    peer.send(Frame::Settings {
        flags: 0,
        entries: vec![],
    })
    .await;
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 5,
    })
    .await;
    peer.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from_static(b"abc"),
    })
    .await;
    peer.send(Frame::Data {
        stream_id: 1,
        flags: FLAG_FIN,
        data: Bytes::new(),
    })
    .await;
    let mut stream = session.accept().await.unwrap();
    assert_eq!(stream.headers.get("streamType"), Some("stdin"));
    assert_eq!(
        stream.reader.read_chunk().await.unwrap(),
        Bytes::from_static(b"abc")
    );
    assert!(
        stream.reader.read_chunk().await.is_none(),
        "FIN ends the reader"
    );
    stream
        .writer
        .write(Bytes::from_static(b"out"))
        .await
        .unwrap();
    stream.writer.close().await.unwrap();
    assert!(
        stream
            .writer
            .write(Bytes::from_static(b"late"))
            .await
            .is_err()
    );

    assert!(matches!(
        peer.next().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    assert_eq!(peer.next().await, Some(Frame::Ping { id: 7 }));
    assert_eq!(
        peer.next().await,
        Some(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"out")
        })
    );
    assert_eq!(
        peer.next().await,
        Some(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new()
        })
    );
    drop(peer.io.shutdown().await);
    session.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_ids_and_too_many_streams_are_refused() {
    let config = SessionConfig {
        max_streams: 1,
        ..SessionConfig::default()
    };
    let (mut session, mut peer) = pair(config);
    peer.syn(2, "even", 0).await;
    peer.syn(3, "first", 0).await;
    peer.syn(5, "second", 0).await;
    peer.send(Frame::Data {
        stream_id: 99,
        flags: 0,
        data: Bytes::from_static(b"x"),
    })
    .await;
    let first = session.accept().await.unwrap();
    assert_eq!(first.id, 3);
    assert_eq!(
        peer.next().await,
        Some(Frame::RstStream {
            stream_id: 2,
            status: rst::PROTOCOL_ERROR
        })
    );
    assert!(matches!(
        peer.next().await,
        Some(Frame::SynReply { stream_id: 3, .. })
    ));
    assert_eq!(
        peer.next().await,
        Some(Frame::RstStream {
            stream_id: 5,
            status: rst::REFUSED_STREAM
        })
    );
    assert_eq!(
        peer.next().await,
        Some(Frame::RstStream {
            stream_id: 99,
            status: rst::INVALID_STREAM
        })
    );
    drop(session);
}

#[tokio::test]
async fn peer_reset_fails_writes() {
    let (mut session, mut peer) = pair(SessionConfig::default());
    peer.syn(1, "stdout", 0).await;
    let stream = session.accept().await.unwrap();
    peer.send(Frame::RstStream {
        stream_id: 1,
        status: rst::CANCEL,
    })
    .await;
    peer.send(Frame::Ping { id: 1 }).await;
    assert!(matches!(peer.next().await, Some(Frame::SynReply { .. })));
    // Once the ping is answered the reset was processed.
    assert_eq!(peer.next().await, Some(Frame::Ping { id: 1 }));
    assert!(stream.writer.write(Bytes::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn garbage_ends_the_session_with_goaway() {
    let (mut session, mut peer) = pair(SessionConfig::default());
    peer.io
        .write_all(&[0x80, 0x02, 0, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    assert_eq!(
        peer.next().await,
        Some(Frame::GoAway {
            last_good_stream_id: 0,
            status: goaway::PROTOCOL_ERROR
        })
    );
    assert!(session.accept().await.is_none());
}

#[tokio::test]
async fn idle_sessions_end() {
    let config = SessionConfig {
        idle_timeout: Duration::from_millis(200),
        ..SessionConfig::default()
    };
    let (mut session, mut peer) = pair(config);
    // No traffic: the session gives up and says goodbye.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), session.accept())
            .await
            .unwrap()
            .is_none()
    );
    drop(session);
    match peer.next().await {
        Some(Frame::GoAway { .. }) | None => {}
        Some(other) => panic!("unexpected {other:?}"),
    }
}
