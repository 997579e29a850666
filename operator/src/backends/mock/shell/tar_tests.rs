use super::*;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn parsed(a: &[&str]) -> TarArgs {
    parse(&args(a)).unwrap_or_else(|e| panic!("{a:?}: {e}"))
}

#[test]
fn parses_what_kubectl_runs() {
    let from_pod = parsed(&["cf", "-", "/tmp/x"]);
    assert_eq!(
        (from_pod.op, from_pod.paths.as_slice()),
        (Op::Create, &args(&["/tmp/x"])[..])
    );
    assert_eq!(parsed(&["cfh", "-", "x"]).paths, ["x"]);
    let to_pod = parsed(&["-xmf", "-"]);
    assert_eq!(
        (to_pod.op, to_pod.touch, to_pod.dir),
        (Op::Extract, true, None)
    );
    let no_preserve = parsed(&[
        "--no-same-permissions",
        "--no-same-owner",
        "-xmf",
        "-",
        "-C",
        "/tmp",
    ]);
    assert!(no_preserve.umask && no_preserve.touch);
    assert_eq!(no_preserve.dir.as_deref(), Some("/tmp"));
    assert_eq!(
        parsed(&["-x", "-f", "-", "--directory=/a"]).dir.as_deref(),
        Some("/a")
    );
    assert_eq!(parsed(&["-xvf-", "-C/b"]).dir.as_deref(), Some("/b"));
    assert!(parsed(&["tvf", "-"]).verbose);
    assert_eq!(parsed(&["-cf", "-", "a", "b"]).paths, ["a", "b"]);
}

#[test]
fn refuses_what_it_cannot_do() {
    for (a, want) in [
        (
            &["-f", "-"][..],
            "You must specify one of the '-ctx' options",
        ),
        (&["cf", "/tmp/out.tar", "x"], "standard input/output only"),
        (&["-xzf", "-"], "invalid option -- 'z'"),
        (&["--bogus", "-x"], "unrecognized option '--bogus'"),
        (&["cf", "-"], "Cowardly refusing"),
        (&["xf", "-", "member"], "selecting members"),
        (&["-xf"], "requires an argument -- 'f'"),
    ] {
        let e = parse(&args(a)).expect_err(&format!("{a:?} must fail"));
        assert!(e.to_string().contains(want), "{a:?}: {e}");
    }
}

fn sample() -> MemFs {
    let mut fs = MemFs::default();
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    fs.write("/tmp/d/a.bin", Bytes::from(binary), 0o640, 7)
        .expect("a");
    fs.write("/tmp/d/sub/b", Bytes::from_static(b"bee\n"), 0o755, 8)
        .expect("b");
    fs
}

#[test]
fn create_then_extract_round_trips() {
    let fs = sample();
    let made = create(&fs, &parsed(&["cf", "-", "/tmp/d/", "/nope"]));
    assert_eq!(
        made.names,
        ["tmp/d/", "tmp/d/a.bin", "tmp/d/sub/", "tmp/d/sub/b"]
    );
    assert_eq!(
        made.errors,
        ["/nope: Cannot stat: No such file or directory"]
    );

    let mut other = MemFs::default();
    let got = extract(
        &mut other,
        &made.archive,
        &parsed(&["xf", "-", "-C", "/root"]),
        99,
    )
    .expect("extract");
    assert_eq!(got.names, made.names);
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(other.read("/root/tmp/d/a.bin"), fs.read("/tmp/d/a.bin"));
    assert_eq!(
        other.get("/root/tmp/d/sub/b"),
        Some(&Node::File {
            mode: 0o755,
            mtime: 8,
            data: Bytes::from_static(b"bee\n")
        })
    );

    // -m dates files now; --no-same-permissions drops the umask bits.
    let mut other = MemFs::default();
    let a = parsed(&["--no-same-permissions", "-xmf", "-"]);
    extract(&mut other, &made.archive, &a, 99).expect("extract");
    assert_eq!(
        other.get("/tmp/d/sub/b"),
        Some(&Node::File {
            mode: 0o755,
            mtime: 99,
            data: Bytes::from_static(b"bee\n")
        })
    );

    // A relative path and a single file.
    let one = create(&fs, &parsed(&["cf", "-", "-C", "/tmp", "d/sub/b"]));
    assert_eq!(one.names, ["d/sub/b"]);
}

/// A ustar archive written member by member, names unchecked (as a hostile client would).
fn raw_archive(members: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    for (name, kind, data) in members {
        let mut h = Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

#[test]
fn files_without_directory_members_get_their_parents() {
    // What kubectl sends for a directory: only files, names under the destination's base name.
    let ar = raw_archive(&[
        ("x/one", EntryType::Regular, b"1"),
        ("x/two/three", EntryType::Regular, b"3"),
    ]);
    let mut fs = MemFs::default();
    extract(&mut fs, &ar, &parsed(&["-xmf", "-", "-C", "/tmp"]), 0).expect("extract");
    assert_eq!(fs.read("/tmp/x/two/three").expect("read").as_ref(), b"3");
    assert!(fs.get("/tmp/x/two").is_some_and(Node::is_dir));
}

#[test]
fn escapes_are_refused_before_anything_is_written() {
    let a = parsed(&["-xmf", "-", "-C", "/tmp"]);
    for (bad, want) in [
        ("../evil", TarError::DotDot("../evil".into())),
        ("ok/../../evil", TarError::DotDot("ok/../../evil".into())),
        ("/etc/evil", TarError::Absolute("/etc/evil".into())),
    ] {
        let ar = raw_archive(&[
            ("fine", EntryType::Regular, b"ok"),
            (bad, EntryType::Regular, b"x"),
        ]);
        let mut fs = MemFs::default();
        assert_eq!(extract(&mut fs, &ar, &a, 0).expect_err(bad), want);
        assert_eq!(
            fs.read("/tmp/fine"),
            Err(FsError::NotFound),
            "{bad}: nothing written"
        );
    }
}

#[test]
fn other_members_and_bad_input_are_errors() {
    let ar = raw_archive(&[
        ("link", EntryType::Symlink, b""),
        ("f", EntryType::Regular, b"f"),
    ]);
    let mut fs = MemFs::default();
    let got = extract(&mut fs, &ar, &parsed(&["xf", "-", "-C", "/tmp"]), 0).expect("extract");
    assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
    assert!(
        got.errors[0].starts_with("link: Cannot create"),
        "{:?}",
        got.errors
    );
    assert_eq!(fs.read("/tmp/f").expect("f").as_ref(), b"f");

    assert!(matches!(
        extract(&mut fs, &[0x41; 1024], &parsed(&["xf", "-"]), 0),
        Err(TarError::Corrupt(_))
    ));
    assert_eq!(
        extract(&mut fs, &ar, &parsed(&["xf", "-", "-C", "/nope"]), 0).map(|_| ()),
        Err(TarError::Open("/nope".into(), FsError::NotFound))
    );
    // An empty archive (two zero blocks) extracts nothing.
    let got = extract(&mut fs, &[0; 1024], &parsed(&["xf", "-"]), 0).expect("empty");
    assert!(got.names.is_empty());
}

#[test]
fn a_full_filesystem_is_an_error_per_member() {
    let big = vec![7u8; fs::MAX_BYTES as usize + 1];
    let ar = raw_archive(&[
        ("big", EntryType::Regular, &big),
        ("small", EntryType::Regular, b"s"),
    ]);
    let mut fs = MemFs::default();
    let got = extract(&mut fs, &ar, &parsed(&["xf", "-", "-C", "/tmp"]), 0).expect("extract");
    assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
    assert!(
        got.errors[0].contains("No space left on device"),
        "{:?}",
        got.errors
    );
    assert_eq!(fs.read("/tmp/small").expect("small").as_ref(), b"s");
}

#[test]
fn long_names_round_trip() {
    let mut fs = MemFs::default();
    let long = format!("/tmp/{}/{}", "d".repeat(120), "f".repeat(150));
    fs.write(&long, Bytes::from_static(b"deep"), 0o644, 0)
        .expect("write");
    let made = create(&fs, &parsed(&["cf", "-", "/tmp"]));
    assert!(made.errors.is_empty(), "{:?}", made.errors);
    let mut other = MemFs::default();
    extract(
        &mut other,
        &made.archive,
        &parsed(&["xf", "-", "-C", "/root"]),
        0,
    )
    .expect("extract");
    assert_eq!(
        other.read(&format!("/root{long}")).expect("read").as_ref(),
        b"deep"
    );
}
