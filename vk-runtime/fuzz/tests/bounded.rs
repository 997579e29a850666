//! The stable CI path of the fuzz targets: a bounded, deterministic run over generated inputs and
//! mutations of valid frames. Set FUZZ_ITERATIONS to run longer (default 100,000 per target).

use bytes::{Bytes, BytesMut};
use vk_runtime::stream::spdy::frame::{self, Frame};
use vk_runtime::stream::spdy::headers::{HeaderEncoder, Headers};

/// xorshift64*: deterministic, so a failure reproduces with the same iteration count.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Valid SPDY traffic to mutate: SYN_STREAMs with real compressed headers, DATA, PING, ...
fn seed_spdy() -> Vec<u8> {
    let mut enc = HeaderEncoder::new();
    let mut out = BytesMut::new();
    for (id, kind) in [(1u32, "error"), (3, "stdin"), (5, "stdout")] {
        let mut h = Headers::new();
        h.insert("streamtype", kind);
        h.insert("port", "80");
        let header_block = enc.encode(&h).expect("headers compress");
        frame::encode(
            &Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block,
            },
            &mut out,
        );
    }
    for f in [
        Frame::Data {
            stream_id: 3,
            flags: 1,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Ping { id: 1 },
        Frame::Settings {
            flags: 0,
            entries: vec![],
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 10,
        },
        Frame::RstStream {
            stream_id: 5,
            status: 5,
        },
        Frame::GoAway {
            last_good_stream_id: 5,
            status: 0,
        },
    ] {
        frame::encode(&f, &mut out);
    }
    out.to_vec()
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(8) {
        match rng.below(4) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => {
                let cut = rng.below(data.len() + 1);
                data.truncate(cut);
            }
            _ => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
        }
    }
    data
}

fn random(rng: &mut Rng) -> Vec<u8> {
    (0..rng.below(256)).map(|_| rng.next() as u8).collect()
}

#[test]
fn spdy_frames_bounded() {
    let mut rng = Rng(0x5eed_0001);
    let seed = seed_spdy();
    vk_runtime_fuzz::spdy_frames(&seed);
    for _ in 0..iterations() {
        vk_runtime_fuzz::spdy_frames(&mutate(&mut rng, &seed));
        vk_runtime_fuzz::spdy_frames(&random(&mut rng));
    }
}

#[test]
fn spdy_header_block_bounded() {
    let mut rng = Rng(0x5eed_0002);
    let mut h = Headers::new();
    h.insert("streamtype", "data");
    let seed = HeaderEncoder::new()
        .encode(&h)
        .expect("headers compress")
        .to_vec();
    for _ in 0..iterations() {
        vk_runtime_fuzz::spdy_header_block(&mutate(&mut rng, &seed));
        vk_runtime_fuzz::spdy_header_block(&random(&mut rng));
    }
}

#[test]
fn ws_frames_bounded() {
    let mut rng = Rng(0x5eed_0003);
    let seeds: [&[u8]; 4] = [
        b"\x00hello",
        b"\xff\x00",
        b"1aGVsbG8=",
        br#"{"Width":80,"Height":24}"#,
    ];
    for i in 0..iterations() {
        vk_runtime_fuzz::ws_frames(&mutate(&mut rng, seeds[i % seeds.len()]));
        vk_runtime_fuzz::ws_frames(&random(&mut rng));
    }
}
