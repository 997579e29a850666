use super::*;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (n, v) in pairs {
        h.insert(n, *v);
    }
    h
}

#[test]
fn block_round_trip_and_multi_values() {
    let h = headers(&[
        ("streamType", "stdout"),
        ("port", "80"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ]);
    let raw = serialize_block(&h);
    let parsed = parse_block(&raw, 64).unwrap();
    assert_eq!(parsed.get("StreamType"), Some("stdout"));
    assert_eq!(
        parsed.get_all("x-multi").collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    // Repeated names go on the wire once, NUL-joined.
    assert_eq!(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]), 3);
}

#[test]
fn compression_context_persists_across_frames() {
    let mut enc = HeaderEncoder::new();
    let mut dec = HeaderDecoder::new(HeaderLimits::default());
    let first = headers(&[("streamtype", "error"), ("requestid", "0")]);
    let second = headers(&[("streamtype", "data"), ("requestid", "0")]);
    let b1 = enc.encode(&first).unwrap();
    let b2 = enc.encode(&second).unwrap();
    // Only the first block carries the zlib header (0x78) with the dictionary id.
    assert_eq!(b1[0], 0x78);
    assert_eq!(&b1[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    assert!(
        b2.len() < b1.len(),
        "second block reuses the shared context"
    );
    assert_eq!(dec.decode(&b1).unwrap(), first);
    assert_eq!(dec.decode(&b2).unwrap(), second);
    // A fresh decoder cannot read the second block alone: contexts must live per connection.
    assert!(
        HeaderDecoder::new(HeaderLimits::default())
            .decode(&b2)
            .is_err()
    );
}

#[test]
fn decodes_a_block_from_another_implementation() {
    // SYN_STREAM header block from node-spdy's test suite: {":method": "GET", ":path": "/"}.
    let hex = "78f9e3c6a7c202e50e507ab442a45a77d7105006b32a4804974d8cfa00000000ffff";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let h = HeaderDecoder::new(HeaderLimits::default())
        .decode(&bytes)
        .unwrap();
    assert_eq!(h.get(":method"), Some("GET"));
    assert_eq!(h.get(":path"), Some("/"));
}

#[test]
fn limits_are_enforced() {
    let mut enc = HeaderEncoder::new();
    let big = headers(&[("x", &"a".repeat(10_000))]);
    let block = enc.encode(&big).unwrap();
    let mut dec = HeaderDecoder::new(HeaderLimits {
        max_block_len: 1024,
        max_pairs: 64,
    });
    assert!(matches!(
        dec.decode(&block),
        Err(HeaderError::TooLarge(1024))
    ));

    let many: Vec<(String, String)> = (0..10)
        .map(|i| (format!("h{i}"), "v".to_string()))
        .collect();
    let mut h = Headers::new();
    for (n, v) in &many {
        h.insert(n, v.clone());
    }
    assert!(matches!(
        parse_block(&serialize_block(&h), 5),
        Err(HeaderError::TooManyPairs(10))
    ));
}

#[test]
fn malformed_blocks_are_rejected() {
    assert!(matches!(
        parse_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a'], 8),
        Err(HeaderError::Truncated)
    ));
    assert!(matches!(
        parse_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 0], 8),
        Err(HeaderError::BadName)
    ));
    assert!(matches!(
        parse_block(&[0, 0, 0, 0, 1], 8),
        Err(HeaderError::Trailing)
    ));
    assert!(
        HeaderDecoder::new(HeaderLimits::default())
            .decode(b"not zlib at all")
            .is_err()
    );
    // A zlib stream announcing some other dictionary.
    assert!(matches!(
        HeaderDecoder::new(HeaderLimits::default()).decode(&[0x78, 0xbb, 0, 0, 0, 1, 0]),
        Err(HeaderError::WrongDictionary(1))
    ));
}
