use super::whiteout::*;
use super::*;
use crate::Error;

fn oci(entries: Vec<Entry>) -> LayerIndex {
    LayerIndex::from_entries(WhiteoutForm::Oci, entries).unwrap()
}

fn ovl(entries: Vec<Entry>) -> LayerIndex {
    LayerIndex::from_entries(WhiteoutForm::Overlay(XattrNamespace::Trusted), entries).unwrap()
}

fn stack(layers: Vec<LayerIndex>) -> LayerStack {
    LayerStack::new(layers)
}

fn wh(path: &str) -> Entry {
    Entry::new(path, EntryKind::CharDevice { major: 0, minor: 0 }).with_mode(0)
}

fn opaque_dir(path: &str) -> Entry {
    Entry::dir(path).with_xattr(TRUSTED_OPAQUE_XATTR, "y")
}

fn names(s: &LayerStack, dir: &str) -> Vec<String> {
    s.readdir(dir.as_bytes())
        .unwrap()
        .into_iter()
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect()
}

fn content<'a>(s: &'a LayerStack, path: &str) -> (usize, &'a str) {
    let st = s.stat(path.as_bytes()).unwrap();
    (st.layer, st.entry.content.as_deref().unwrap_or(""))
}

fn found_layer(s: &LayerStack, path: &str) -> Option<usize> {
    match s.resolve(path.as_bytes()).unwrap() {
        Resolution::Found { layer, .. } => Some(layer),
        _ => None,
    }
}

/// The merged view as comparable lines: path, st_mode, size, content, symlink target.
fn view(s: &LayerStack) -> Vec<String> {
    s.iter()
        .map(|st| {
            let target = match &st.entry.kind {
                EntryKind::Symlink { target } => String::from_utf8_lossy(target).into_owned(),
                _ => String::new(),
            };
            format!(
                "{} {:o} {} {:?} {}",
                String::from_utf8_lossy(st.path),
                st.st_mode(),
                st.entry.size,
                st.entry.content,
                target
            )
        })
        .collect()
}

// --- the seed experiment -------------------------------------------------------------------

fn seed_materials() -> (Vec<Entry>, Vec<Entry>) {
    (
        vec![
            Entry::file_with("concrete", "bad concrete\n"),
            Entry::file_with("rebar", "rebar\n"),
        ],
        vec![
            Entry::file_with("concrete", "good concrete\n"),
            Entry::file_with("marble", "marble\n"),
        ],
    )
}

fn check_seed(s: &LayerStack) {
    assert_eq!(names(s, ""), ["concrete", "frame", "rebar"]);
    assert_eq!(content(s, "concrete"), (1, "good concrete\n"));
    assert_eq!(content(s, "rebar"), (0, "rebar\n"));
    assert_eq!(content(s, "frame"), (2, "main structure\n"));
    assert_eq!(
        s.resolve(b"marble").unwrap(),
        Resolution::Whiteout { layer: 2 }
    );
    assert_eq!(s.stat(b"marble").unwrap_err().code(), "ERR_PATH_NOT_FOUND");
}

#[test]
fn seed_experiment_oci_form() {
    let (material, material2) = seed_materials();
    let build = vec![
        Entry::file_with("frame", "main structure\n"),
        Entry::file(".wh.marble"),
    ];
    check_seed(&stack(vec![oci(material), oci(material2), oci(build)]));
}

#[test]
fn seed_experiment_overlay_form() {
    let (material, material2) = seed_materials();
    let build = vec![Entry::file_with("frame", "main structure\n"), wh("marble")];
    check_seed(&stack(vec![ovl(material), ovl(material2), ovl(build)]));
}

#[test]
fn seed_experiment_before_the_build_layer_changes() {
    let (material, material2) = seed_materials();
    let s = stack(vec![oci(material), oci(material2), oci(vec![])]);
    assert_eq!(names(&s, ""), ["concrete", "marble", "rebar"]);
    assert_eq!(content(&s, "concrete").1, "good concrete\n");
}

// --- one rule at a time ----------------------------------------------------------------------

#[test]
fn whiteout_of_a_directory_hides_everything_below() {
    let s = stack(vec![
        oci(vec![
            Entry::file("d/x"),
            Entry::file("d/y/z"),
            Entry::file("keep"),
        ]),
        oci(vec![Entry::file(".wh.d")]),
    ]);
    assert_eq!(names(&s, ""), ["keep"]);
    for p in ["d", "d/x", "d/y", "d/y/z"] {
        assert_eq!(
            s.resolve(p.as_bytes()).unwrap(),
            Resolution::Whiteout { layer: 1 },
            "{p}"
        );
    }
    assert_eq!(s.resolve(b"d/nothing").unwrap(), Resolution::Absent);
    assert_eq!(s.lstat(b"d/x").unwrap_err().code(), "ERR_PATH_NOT_FOUND");
    assert_eq!(s.readdir(b"d").unwrap_err().code(), "ERR_PATH_NOT_FOUND");
}

#[test]
fn directory_recreated_above_a_whiteout_starts_empty() {
    let s = stack(vec![
        oci(vec![Entry::file("d/x")]),
        oci(vec![Entry::file(".wh.d")]),
        oci(vec![Entry::file("d/new")]),
    ]);
    assert_eq!(names(&s, "d"), ["new"]);
    assert_eq!(
        s.resolve(b"d/x").unwrap(),
        Resolution::Whiteout { layer: 1 }
    );
}

#[test]
fn opaque_directory_keeps_itself_and_hides_lower_contents() {
    let lower = vec![
        Entry::dir("d").with_mode(0o700),
        Entry::file("d/x"),
        Entry::file("d/sub/y"),
    ];
    let in_oci = stack(vec![
        oci(lower.clone()),
        oci(vec![
            Entry::dir("d").with_mode(0o750),
            Entry::file("d/.wh..wh..opq"),
            Entry::file("d/z"),
        ]),
    ]);
    let in_ovl = stack(vec![
        ovl(lower),
        ovl(vec![opaque_dir("d").with_mode(0o750), Entry::file("d/z")]),
    ]);
    for s in [&in_oci, &in_ovl] {
        assert_eq!(names(s, "d"), ["z"]);
        let d = s.lstat(b"d").unwrap();
        assert_eq!((d.layer, d.entry.mode), (1, 0o750));
        assert!(d.entry.xattrs.is_empty(), "the marker is not content");
        assert_eq!(
            s.resolve(b"d/x").unwrap(),
            Resolution::Whiteout { layer: 1 }
        );
        assert_eq!(
            s.resolve(b"d/sub/y").unwrap(),
            Resolution::Whiteout { layer: 1 }
        );
    }
    assert_eq!(view(&in_oci), view(&in_ovl));
}

#[test]
fn opaque_marker_alone_implies_the_directory() {
    let s = stack(vec![
        oci(vec![Entry::file("d/x")]),
        oci(vec![Entry::file("d/.wh..wh..opq")]),
    ]);
    assert_eq!(names(&s, ""), ["d"]);
    assert!(names(&s, "d").is_empty());
    assert!(s.lstat(b"d").unwrap().implicit);
}

#[test]
fn opaque_in_a_middle_layer_cuts_only_what_is_below_it() {
    let s = stack(vec![
        oci(vec![Entry::file("d/a")]),
        oci(vec![Entry::file("d/.wh..wh..opq"), Entry::file("d/b")]),
        oci(vec![Entry::file("d/c")]),
    ]);
    assert_eq!(names(&s, "d"), ["b", "c"]);
    assert_eq!(
        s.resolve(b"d/a").unwrap(),
        Resolution::Whiteout { layer: 1 }
    );
}

#[test]
fn file_over_dir_hides_the_lower_tree() {
    let s = stack(vec![
        oci(vec![Entry::file("a/b/c"), Entry::file("a/b/d/e")]),
        oci(vec![Entry::file_with("a/b", "now a file")]),
    ]);
    assert_eq!(names(&s, "a"), ["b"]);
    assert_eq!(content(&s, "a/b"), (1, "now a file"));
    assert_eq!(
        s.resolve(b"a/b/c").unwrap(),
        Resolution::Shadowed { layer: 1 }
    );
    assert_eq!(
        s.resolve(b"a/b/d/e").unwrap(),
        Resolution::Shadowed { layer: 1 }
    );
    assert_eq!(s.lstat(b"a/b/c").unwrap_err().code(), "ERR_NOT_A_DIRECTORY");
    assert_eq!(s.readdir(b"a/b").unwrap_err().code(), "ERR_NOT_A_DIRECTORY");
    // A symlink is a non-directory too.
    let s = stack(vec![
        oci(vec![Entry::file("a/x")]),
        oci(vec![Entry::symlink("a", "elsewhere")]),
    ]);
    assert_eq!(
        s.resolve(b"a/x").unwrap(),
        Resolution::Shadowed { layer: 1 }
    );
}

#[test]
fn dir_over_file_replaces_it_and_cuts_off_what_was_below() {
    let s = stack(vec![
        oci(vec![Entry::file("a/b/old")]),
        oci(vec![Entry::file_with("a/b", "file")]),
        oci(vec![Entry::file("a/b/new")]),
    ]);
    assert_eq!(names(&s, "a/b"), ["new"]);
    assert_eq!(found_layer(&s, "a/b"), Some(2));
    assert_eq!(
        s.resolve(b"a/b/old").unwrap(),
        Resolution::Shadowed { layer: 1 }
    );

    let s = stack(vec![
        oci(vec![Entry::file("x")]),
        oci(vec![Entry::dir("x"), Entry::file("x/y")]),
    ]);
    assert_eq!(names(&s, "x"), ["y"]);
    assert!(s.lstat(b"x").unwrap().kind().is_dir());
}

#[test]
fn directories_merge_and_the_topmost_provides_metadata() {
    let s = stack(vec![
        oci(vec![Entry::dir("d").with_mode(0o700), Entry::file("d/a")]),
        oci(vec![Entry::file("d/c")]),
        oci(vec![
            Entry::dir("d").with_mode(0o755).with_owner(7, 8),
            Entry::file("d/b"),
        ]),
    ]);
    assert_eq!(names(&s, "d"), ["a", "b", "c"]);
    let d = s.lstat(b"d").unwrap();
    assert_eq!((d.layer, d.entry.mode, d.entry.uid), (2, 0o755, 7));
    // The middle layer only implies `d`, but it is still the topmost for `d/c`.
    assert_eq!(found_layer(&s, "d/c"), Some(1));
}

#[test]
fn implicit_directory_of_an_upper_layer_has_default_metadata() {
    let s = stack(vec![
        oci(vec![Entry::dir("d").with_mode(0o700)]),
        oci(vec![Entry::file("d/x")]),
    ]);
    let d = s.lstat(b"d").unwrap();
    assert!(d.implicit);
    assert_eq!((d.layer, d.entry.mode), (1, 0o755));
    match s.resolve(b"d").unwrap() {
        Resolution::Found { implicit, .. } => assert!(implicit),
        other => panic!("{other:?}"),
    }
}

#[test]
fn symlinked_directory_in_a_lower_layer_reaches_files_of_upper_layers() {
    let s = stack(vec![
        oci(vec![
            Entry::file("usr/lib/x"),
            Entry::symlink("lib", "usr/lib"),
        ]),
        oci(vec![Entry::file_with("usr/lib/y", "upper")]),
    ]);
    let y = s.stat(b"lib/y").unwrap();
    assert_eq!((y.path, y.layer), (&b"usr/lib/y"[..], 1));
    assert_eq!(s.lstat(b"lib/y").unwrap().path, b"usr/lib/y");
    assert!(matches!(
        s.lstat(b"lib").unwrap().kind(),
        EntryKind::Symlink { .. }
    ));
    assert_eq!(names(&s, "lib"), ["x", "y"]);
    assert_eq!(s.stat(b"lib").unwrap().path, b"usr/lib");
    // `lib/y` is not a path of any layer: resolve is lexical.
    assert_eq!(s.resolve(b"lib/y").unwrap(), Resolution::Absent);
}

#[test]
fn file_listed_below_a_lower_symlink_gets_a_real_directory() {
    // Extracting the upper layer into its own diff dir creates `lib/` as a directory, which
    // replaces the lower symlink (overlay2 semantics, not a flattening extractor's).
    let s = stack(vec![
        oci(vec![
            Entry::file("usr/lib/x"),
            Entry::symlink("lib", "usr/lib"),
        ]),
        oci(vec![Entry::file("lib/z")]),
    ]);
    assert!(s.lstat(b"lib").unwrap().kind().is_dir());
    assert_eq!(names(&s, "lib"), ["z"]);
    assert_eq!(names(&s, "usr/lib"), ["x"]);
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let s = stack(vec![oci(vec![
        Entry::file_with("etc/passwd", "inside"),
        Entry::symlink("a/abs", "/../../etc/passwd"),
        Entry::symlink("a/rel", "../../../../etc/passwd"),
        Entry::symlink("a/slash", "/"),
        Entry::symlink("a/dotdot", ".."),
        Entry::symlink("a/up", "../../.."),
    ])]);
    for p in [
        "a/abs",
        "a/rel",
        "a/slash/etc/passwd",
        "a/up/etc/passwd",
        "/../etc/passwd",
        "../../etc/../etc/passwd",
        "a/dotdot/a/dotdot/etc/passwd",
    ] {
        let st = s.stat(p.as_bytes()).unwrap();
        assert_eq!(st.path, b"etc/passwd", "{p}");
        assert_eq!(st.entry.content.as_deref(), Some("inside"), "{p}");
    }
    assert_eq!(s.stat(b"a/slash").unwrap().path, b"");
    assert!(matches!(
        s.lstat(b"a/abs").unwrap().kind(),
        EntryKind::Symlink { .. }
    ));
    assert_eq!(names(&s, "a/up"), ["a", "etc"]);
}

#[test]
fn dangling_links_and_trailing_slashes() {
    let s = stack(vec![oci(vec![
        Entry::file("f"),
        Entry::symlink("dangling", "nowhere"),
        Entry::symlink("tofile", "f"),
        Entry::symlink("empty", ""),
    ])]);
    let code = |r: Result<Stat<'_>, Error>| r.unwrap_err().code();
    assert_eq!(code(s.stat(b"dangling")), "ERR_PATH_NOT_FOUND");
    assert!(s.lstat(b"dangling").is_ok());
    assert_eq!(code(s.stat(b"dangling/x")), "ERR_PATH_NOT_FOUND");
    assert_eq!(code(s.stat(b"f/")), "ERR_NOT_A_DIRECTORY");
    assert_eq!(code(s.lstat(b"tofile/")), "ERR_NOT_A_DIRECTORY");
    assert_eq!(code(s.stat(b"f/..")), "ERR_NOT_A_DIRECTORY");
    assert_eq!(code(s.stat(b"empty")), "ERR_PATH_NOT_FOUND");
    assert_eq!(s.stat(b"tofile").unwrap().path, b"f");
}

#[test]
fn symlink_loops_give_eloop_after_forty_links() {
    let mut entries = vec![
        Entry::symlink("a", "b"),
        Entry::symlink("b", "a"),
        Entry::symlink("self", "self"),
        Entry::symlink("dirloop", "dirloop/x"),
        Entry::file("target"),
    ];
    // c0 -> c1 -> ... -> c39 -> target: 40 links, allowed; d0 .. d40: 41 links, too many.
    for i in 0..40 {
        let next = if i == 39 {
            "target".to_string()
        } else {
            format!("c{}", i + 1)
        };
        entries.push(Entry::symlink(format!("c{i}"), next));
    }
    for i in 0..41 {
        let next = if i == 40 {
            "target".to_string()
        } else {
            format!("d{}", i + 1)
        };
        entries.push(Entry::symlink(format!("d{i}"), next));
    }
    let s = stack(vec![oci(entries)]);
    for p in ["a", "b", "self", "dirloop", "d0"] {
        let err = s.stat(p.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "ERR_SYMLINK_LOOP", "{p}");
        assert!(matches!(err, Error::SymlinkLoop { limit: 40, .. }));
        assert!(s.lstat(p.as_bytes()).is_ok(), "{p}");
    }
    assert_eq!(s.lstat(b"a/x").unwrap_err().code(), "ERR_SYMLINK_LOOP");
    assert_eq!(s.stat(b"c0").unwrap().path, b"target");
    assert_eq!(s.stat(b"d1").unwrap().path, b"target");
}

#[test]
fn hardlinks_report_the_target_inode() {
    let s = stack(vec![
        oci(vec![
            Entry::file_with("f", "data").with_mode(0o600),
            Entry::hardlink("h", "./f"),
            Entry::hardlink("dir/h2", "h"),
            Entry::symlink("s", "tgt"),
            Entry::hardlink("hs", "s"),
            Entry::file("tgt"),
        ]),
        oci(vec![Entry::file(".wh.f")]),
    ]);
    let h = s.lstat(b"h").unwrap();
    assert_eq!(h.path, b"h");
    assert_eq!(h.entry.path, b"f");
    assert_eq!((h.entry.mode, h.nlink), (0o600, 3));
    assert_eq!(h.entry.content.as_deref(), Some("data"));
    assert_eq!(s.lstat(b"dir/h2").unwrap().entry.path, b"f");
    match s.resolve(b"h").unwrap() {
        Resolution::Found { entry, .. } => {
            assert_eq!(
                entry.kind,
                EntryKind::Hardlink {
                    target: b"f".to_vec()
                }
            )
        }
        other => panic!("{other:?}"),
    }
    // `f` is whited out in the upper layer; its other names still reach the inode.
    assert_eq!(s.resolve(b"f").unwrap(), Resolution::Whiteout { layer: 1 });
    assert_eq!(s.stat(b"h").unwrap().entry.content.as_deref(), Some("data"));
    // A hardlink to a symlink is a symlink.
    assert!(matches!(
        s.lstat(b"hs").unwrap().kind(),
        EntryKind::Symlink { .. }
    ));
    assert_eq!(s.stat(b"hs").unwrap().path, b"tgt");
}

#[test]
fn bad_hardlinks_are_rejected() {
    let cases = [
        vec![Entry::hardlink("h", "missing")],
        vec![Entry::hardlink("h", "d"), Entry::dir("d")],
        vec![Entry::hardlink("a", "b"), Entry::hardlink("b", "a")],
        vec![Entry::hardlink("h", ".wh.x"), Entry::file(".wh.x")],
    ];
    for entries in cases {
        let err = LayerIndex::from_entries(WhiteoutForm::Oci, entries.clone()).unwrap_err();
        assert_eq!(err.code(), "ERR_ENTRY_CONFLICT", "{entries:?}: {err}");
    }
}

#[test]
fn oci_and_overlay_forms_give_the_same_view() {
    let base = vec![
        Entry::file_with("a/x", "1"),
        Entry::file_with("a/y", "2"),
        Entry::file_with("b/c/d", "3"),
        Entry::symlink("l", "a"),
        Entry::file_with("gone", "4"),
        Entry::new("fifo", EntryKind::Fifo),
        Entry::new("null", EntryKind::CharDevice { major: 1, minor: 3 }),
    ];
    let upper_oci = vec![
        Entry::file("a/.wh.x"),
        Entry::file("b/.wh..wh..opq"),
        Entry::file_with("b/e", "5"),
        Entry::file(".wh.gone"),
        Entry::file(".wh.l"),
        Entry::file_with("new", "6"),
    ];
    let upper_ovl = vec![
        wh("a/x"),
        opaque_dir("b"),
        Entry::file_with("b/e", "5"),
        wh("gone"),
        wh("l"),
        Entry::file_with("new", "6"),
    ];
    let a = stack(vec![oci(base.clone()), oci(upper_oci.clone())]);
    let b = stack(vec![ovl(base.clone()), ovl(upper_ovl.clone())]);
    assert_eq!(view(&a), view(&b));
    assert_eq!(names(&a, ""), ["a", "b", "fifo", "new", "null"]);
    assert_eq!(names(&a, "a"), ["y"]);
    assert_eq!(names(&a, "b"), ["e"]);
    // And through the converters.
    let converted: Vec<Entry> = upper_ovl
        .into_iter()
        .flat_map(|e| overlay_to_oci(e, XattrNamespace::Trusted).unwrap())
        .collect();
    let c = stack(vec![oci(base), oci(converted)]);
    assert_eq!(view(&a), view(&c));
}

#[test]
fn whiteout_and_entry_in_the_same_layer() {
    // OCI: a whiteout applies to lower layers only. Next to a directory it makes it opaque.
    let s = stack(vec![
        oci(vec![Entry::file("d/old"), Entry::file_with("f", "old")]),
        oci(vec![
            Entry::file(".wh.d"),
            Entry::dir("d"),
            Entry::file("d/new"),
            Entry::file_with("f", "new"),
            Entry::file(".wh.f"),
        ]),
    ]);
    assert_eq!(names(&s, "d"), ["new"]);
    assert_eq!(content(&s, "f"), (1, "new"));
    // Children listed below a whiteout of the same layer: same thing, implicitly.
    let s = stack(vec![
        oci(vec![Entry::file("d/old")]),
        oci(vec![Entry::file("d/new"), Entry::file(".wh.d")]),
    ]);
    assert_eq!(names(&s, "d"), ["new"]);
}

#[test]
fn root_opaque_is_honored() {
    let s = stack(vec![
        oci(vec![Entry::file("old")]),
        oci(vec![Entry::file(".wh..wh..opq"), Entry::file("new")]),
    ]);
    assert_eq!(names(&s, ""), ["new"]);
    assert_eq!(
        s.resolve(b"old").unwrap(),
        Resolution::Whiteout { layer: 1 }
    );
}

#[test]
fn whiteout_names_are_validated() {
    assert!(is_whiteout(b".wh.x") && is_whiteout(OPAQUE_MARKER.as_bytes()));
    assert!(!is_whiteout(b"x.wh.") && !is_whiteout(b".wh"));
    assert_eq!(whiteout_target(b".wh.foo").unwrap(), b"foo");
    assert_eq!(whiteout_target(b".wh..foo").unwrap(), b".foo");
    for bad in [
        &b".wh."[..],
        b".wh..",
        b".wh...",
        b".wh.a/b",
        b"a/.wh.b",
        b"plain",
        b".wh..wh..opq",
        b".wh..wh.plnk",
        b".wh.a\0",
    ] {
        let err = whiteout_target(bad).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_WHITEOUT", "{bad:?}");
    }
    assert_eq!(whiteout_name(b"x").unwrap(), b".wh.x");
    for bad in [&b""[..], b".", b"..", b"a/b", b".wh.x"] {
        assert!(whiteout_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(classify_oci_name(b".wh..wh.plnk").unwrap(), OciName::Meta);
    assert_eq!(
        classify_oci_name(b".wh.x").unwrap(),
        OciName::Whiteout(b"x")
    );
}

#[test]
fn oci_layers_with_bad_markers_are_rejected() {
    let cases: Vec<Vec<Entry>> = vec![
        vec![Entry::file(".wh.")],
        vec![Entry::file("d/.wh..")],
        vec![Entry::file(".wh...")],
        vec![Entry::dir(".wh.x")],
        vec![Entry::file(".wh.x/inside")],
        vec![Entry::symlink(".wh.x", "y")],
        vec![Entry::hardlink(".wh.x", "y"), Entry::file("y")],
        vec![Entry::dir(".wh..wh..opq")],
        vec![Entry::new(
            ".wh.dev",
            EntryKind::CharDevice { major: 0, minor: 0 },
        )],
    ];
    for entries in cases {
        let err = LayerIndex::from_entries(WhiteoutForm::Oci, entries.clone()).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_WHITEOUT", "{entries:?}: {err}");
    }
    // aufs metadata is skipped, not content.
    let idx = oci(vec![
        Entry::dir(".wh..wh.plnk"),
        Entry::file(".wh..wh.plnk/123.456"),
        Entry::file(".wh..wh.aufs"),
        Entry::file("x"),
    ]);
    assert_eq!(idx.len(), 2);
    // In the overlay form `.wh.` names are ordinary.
    let s = stack(vec![ovl(vec![Entry::file(".wh.x")])]);
    assert_eq!(names(&s, ""), [".wh.x"]);
}

#[test]
fn layer_conflicts_and_bad_paths() {
    let conflict = |entries: Vec<Entry>| {
        LayerIndex::from_entries(WhiteoutForm::Oci, entries)
            .unwrap_err()
            .code()
    };
    assert_eq!(
        conflict(vec![Entry::file("a"), Entry::file("a")]),
        "ERR_ENTRY_CONFLICT"
    );
    assert_eq!(
        conflict(vec![Entry::file("a"), Entry::file("a/b")]),
        "ERR_ENTRY_CONFLICT"
    );
    assert_eq!(
        conflict(vec![Entry::file("a/b"), Entry::file("a")]),
        "ERR_ENTRY_CONFLICT"
    );
    assert_eq!(
        conflict(vec![Entry::file("a/../b")]),
        "ERR_INVALID_ENTRY_PATH"
    );
    assert_eq!(conflict(vec![Entry::file("./")]), "ERR_INVALID_ENTRY_PATH");
    assert_eq!(
        conflict(vec![Entry::dir("/"), Entry::dir(".")]),
        "ERR_ENTRY_CONFLICT"
    );
    // Paths are normalized; a directory listed after its children is fine.
    let idx = oci(vec![
        Entry::file("./usr//bin/sh"),
        Entry::dir("/usr/").with_mode(0o711),
        Entry::dir("./"),
    ]);
    match idx.get(b"usr").unwrap() {
        Indexed::Entry {
            entry, implicit, ..
        } => assert_eq!((entry.mode, implicit), (0o711, false)),
        other => panic!("{other:?}"),
    }
    assert!(idx.get(b"usr/bin/sh").is_some());
    let s = stack(vec![idx]);
    assert_eq!(
        s.resolve(b"../etc").unwrap_err().code(),
        "ERR_INVALID_ENTRY_PATH"
    );
    assert_eq!(found_layer(&s, "/usr/bin/sh/"), Some(0));
}

#[test]
fn normalize_path_cases() {
    let n =
        |p: &str| String::from_utf8(normalize_path(p.as_bytes()).unwrap().into_owned()).unwrap();
    assert_eq!(n("./a/b/"), "a/b");
    assert_eq!(n("/a//./b"), "a/b");
    assert_eq!(n("."), "");
    assert_eq!(n("/"), "");
    assert_eq!(n("a"), "a");
    assert!(matches!(
        normalize_path(b"a/b"),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
    assert!(normalize_path(b"a/..").is_err());
    assert!(normalize_path(b"a\0b").is_err());
}

#[test]
fn readdir_errors_and_root_listing() {
    let s = stack(vec![oci(vec![
        Entry::file("f"),
        Entry::symlink("l", "d"),
        Entry::dir("d"),
    ])]);
    assert_eq!(names(&s, ""), ["d", "f", "l"]);
    assert_eq!(names(&s, "/"), ["d", "f", "l"]);
    assert!(names(&s, "l").is_empty());
    assert_eq!(s.readdir(b"f").unwrap_err().code(), "ERR_NOT_A_DIRECTORY");
    assert_eq!(s.readdir(b"x").unwrap_err().code(), "ERR_PATH_NOT_FOUND");
    assert_eq!(s.visible_len(), 4);
    assert_eq!(s.lstat(b"").unwrap().nlink, 3);
}

// --- converters ------------------------------------------------------------------------------

#[test]
fn oci_to_overlay_decisions() {
    let ns = XattrNamespace::Trusted;
    let esc = PrivateXattrPolicy::Escape;
    assert_eq!(
        oci_to_overlay(Entry::file("./a/.wh.b"), ns, esc).unwrap(),
        ToOverlay::Whiteout {
            path: b"a/b".to_vec()
        }
    );
    assert_eq!(
        oci_to_overlay(Entry::file("a/.wh..wh..opq"), XattrNamespace::User, esc).unwrap(),
        ToOverlay::MarkOpaque {
            dir: b"a".to_vec(),
            xattr: USER_OPAQUE_XATTR
        }
    );
    assert_eq!(
        oci_to_overlay(Entry::file(".wh..wh.plnk/1"), ns, esc).unwrap(),
        ToOverlay::Skip
    );
    // Private xattrs arriving as content are escaped or dropped, never obeyed.
    let hostile = Entry::dir("d")
        .with_xattr("trusted.overlay.opaque", "y")
        .with_xattr("trusted.overlay.redirect", "/etc")
        .with_xattr("user.overlay.opaque", "y")
        .with_xattr("security.capability", "cap");
    let ToOverlay::Create(e) = oci_to_overlay(hostile.clone(), ns, esc).unwrap() else {
        panic!()
    };
    let got: Vec<&str> = e.xattrs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        got,
        [
            "trusted.overlay.overlay.opaque",
            "trusted.overlay.overlay.redirect",
            "user.overlay.opaque",
            "security.capability"
        ]
    );
    let ToOverlay::Create(e) =
        oci_to_overlay(hostile.clone(), ns, PrivateXattrPolicy::Drop).unwrap()
    else {
        panic!()
    };
    assert_eq!(e.xattrs.len(), 2);
    // In the index, such content xattrs do not make the directory opaque.
    let s = stack(vec![oci(vec![Entry::file("d/x")]), oci(vec![hostile])]);
    assert_eq!(names(&s, "d"), ["x"]);
    // A 0/0 device cannot be written in overlay form.
    let dev = Entry::new("dev", EntryKind::CharDevice { major: 0, minor: 0 });
    assert_eq!(
        oci_to_overlay(dev, ns, esc).unwrap_err().code(),
        "ERR_INVALID_WHITEOUT"
    );
}

#[test]
fn overlay_to_oci_decisions() {
    let ns = XattrNamespace::Trusted;
    let out = overlay_to_oci(wh("a/b"), ns).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].path, b"a/.wh.b");
    assert_eq!((out[0].kind.clone(), out[0].mode), (EntryKind::File, 0));

    let dir = opaque_dir("d")
        .with_xattr("trusted.overlay.origin", "x")
        .with_xattr("trusted.overlay.overlay.opaque", "y")
        .with_xattr("user.keep", "1");
    let out = overlay_to_oci(dir, ns).unwrap();
    let paths: Vec<&[u8]> = out.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b"d"[..], b"d/.wh..wh..opq"]);
    assert_eq!(
        out[0].xattrs,
        vec![
            ("trusted.overlay.opaque".to_string(), b"y".to_vec()),
            ("user.keep".to_string(), b"1".to_vec())
        ]
    );
    for unsupported in [
        TRUSTED_REDIRECT_XATTR,
        TRUSTED_METACOPY_XATTR,
        TRUSTED_WHITEOUT_XATTR,
    ] {
        let e = Entry::file("f").with_xattr(unsupported, "");
        assert_eq!(
            overlay_to_oci(e, ns).unwrap_err().code(),
            "ERR_UNSUPPORTED_OVERLAY_FEATURE"
        );
    }
    // With the user namespace, trusted.* is content.
    let e = Entry::dir("d").with_xattr(TRUSTED_METACOPY_XATTR, "");
    assert_eq!(overlay_to_oci(e, XattrNamespace::User).unwrap().len(), 1);
    // `.wh.` names cannot be expressed in OCI.
    assert_eq!(
        overlay_to_oci(Entry::file("a/.wh.x"), ns)
            .unwrap_err()
            .code(),
        "ERR_INVALID_WHITEOUT"
    );
    // opaque = "x" (xwhiteouts possible) is not opaque.
    let e = Entry::dir("d").with_xattr(TRUSTED_OPAQUE_XATTR, "x");
    assert_eq!(overlay_to_oci(e, ns).unwrap().len(), 1);
}

#[test]
fn conversions_round_trip() {
    let ns = XattrNamespace::Trusted;
    let oci_entries = vec![
        Entry::dir("d").with_xattr("trusted.overlay.opaque", "y"),
        Entry::file("d/.wh..wh..opq"),
        Entry::file("d/.wh.gone"),
        Entry::file_with("d/f", "x").with_mode(0o4755),
        Entry::symlink("s", "/d/f"),
    ];
    let mut back = Vec::new();
    for e in oci_entries.clone() {
        let overlay_entry = match oci_to_overlay(e, ns, PrivateXattrPolicy::Escape).unwrap() {
            ToOverlay::Create(e) => e,
            ToOverlay::Whiteout { path } => {
                Entry::new(path, EntryKind::CharDevice { major: 0, minor: 0 })
            }
            ToOverlay::MarkOpaque { dir, xattr } => {
                // An applier sets the xattr on the existing directory; model it as such.
                let existing = back
                    .iter_mut()
                    .find(|x: &&mut Entry| x.path == dir)
                    .expect("directory first");
                existing.xattrs.push((xattr.to_string(), b"y".to_vec()));
                continue;
            }
            ToOverlay::Skip => continue,
        };
        back.push(overlay_entry);
    }
    let lower = vec![Entry::file("d/old"), Entry::file("d/gone")];
    let a = stack(vec![oci(lower.clone()), oci(oci_entries)]);
    let b = stack(vec![ovl(lower), ovl(back)]);
    assert_eq!(view(&a), view(&b));
    let d = a.lstat(b"d").unwrap();
    assert_eq!(d.entry.xattr("trusted.overlay.opaque"), Some(&b"y"[..]));
    assert_eq!(names(&a, "d"), ["f"]);
}

#[test]
fn private_xattr_helpers() {
    assert!(is_overlay_private_xattr("trusted.overlay.opaque"));
    assert!(is_overlay_private_xattr("user.overlay.redirect"));
    assert!(!is_overlay_private_xattr("user.overlayx"));
    assert!(!is_overlay_private_xattr("security.selinux"));
    let ns = XattrNamespace::Trusted;
    assert_eq!(
        escape_overlay_xattr(ns, "trusted.overlay.metacopy").as_deref(),
        Some("trusted.overlay.overlay.metacopy")
    );
    assert_eq!(
        unescape_overlay_xattr(ns, "trusted.overlay.overlay.metacopy").as_deref(),
        Some("trusted.overlay.metacopy")
    );
    assert_eq!(unescape_overlay_xattr(ns, "trusted.overlay.opaque"), None);
    assert!(is_opaque_xattr(ns, TRUSTED_OPAQUE_XATTR, b"y"));
    assert!(!is_opaque_xattr(ns, USER_OPAQUE_XATTR, b"y"));
    assert!(is_overlay_whiteout(&EntryKind::CharDevice {
        major: 0,
        minor: 0
    }));
    assert!(!is_overlay_whiteout(&EntryKind::CharDevice {
        major: 1,
        minor: 0
    }));
}

#[test]
fn many_layers_resolve_to_the_topmost() {
    let layers: Vec<LayerIndex> = (0..50)
        .map(|l| {
            oci((0..20)
                .map(|i| {
                    Entry::file_with(format!("d{}/f{}", i % 4, (i + l) % 30), "x").with_mtime(l)
                })
                .collect())
        })
        .collect();
    let s = stack(layers);
    let st = s.lstat(b"d0/f0").unwrap();
    // The topmost layer listing d0/f0 decides it.
    let expect = (0..50i64)
        .rev()
        .find(|&l| (0..20).any(|i: i64| i % 4 == 0 && (i + l) % 30 == 0))
        .unwrap();
    assert_eq!(st.entry.mtime, expect);
}
