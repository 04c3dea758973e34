//! Kernel equivalence for `stevedore_core::overlay`: layer stacks are written as real
//! directories in the overlay form (whiteouts as character devices 0/0 made with `mknod`,
//! opaque directories with `setfattr -n trusted.overlay.opaque -v y`), mounted read-only with
//! `mount -t overlay -o lowerdir=top:...:base`, and every path of the mount (type, mode, owner,
//! size, mtime, content hash, symlink target, xattrs) is compared with the resolver's view of
//! the same directories. `stat` through symlinks is compared inside a chroot of the mount (a
//! re-exec of this test binary), which resolves absolute targets and `..` the way the resolver
//! does. Each stack is also converted to the OCI form and back and must give the same view.
//!
//! Needs root, overlayfs, `mount`, `mknod`, `setfattr`/`getfattr` (package `attr`). Without
//! them the tests print why and pass, unless `STEVEDORE_REQUIRE_KERNEL_OVERLAY=1`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use stevedore_core::digest::{hash, Algorithm};
use stevedore_core::overlay::{
    oci_to_overlay, overlay_to_oci, Entry, EntryKind, LayerIndex, LayerStack, PrivateXattrPolicy,
    Resolution, Stat, ToOverlay, WhiteoutForm, XattrNamespace,
};
use stevedore_core::Error;

const NS: XattrNamespace = XattrNamespace::Trusted;
const CHROOT_ROOT_VAR: &str = "STEVEDORE_OVL_CHROOT_ROOT";
const CHROOT_LIST_VAR: &str = "STEVEDORE_OVL_CHROOT_LIST";

// --- environment -----------------------------------------------------------------------------

fn kernel_overlay_available() -> bool {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    match PROBE.get_or_init(probe_kernel_overlay) {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("STEVEDORE_REQUIRE_KERNEL_OVERLAY").as_deref() == Ok("1") {
                panic!("kernel overlay test required but unavailable: {why}");
            }
            eprintln!("skipping kernel overlay test: {why}");
            false
        }
    }
}

fn probe_kernel_overlay() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or("no Uid in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("not root (euid {euid})"));
    }
    let fss = fs::read_to_string("/proc/filesystems").map_err(|e| e.to_string())?;
    if !fss.lines().any(|l| l.trim_end().ends_with("\toverlay")) {
        return Err("overlay is not in /proc/filesystems".into());
    }
    for tool in ["mount", "umount", "mknod", "setfattr", "getfattr"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "{tool} is missing (getfattr/setfattr: package attr)"
            ));
        }
    }
    // Root without CAP_SYS_ADMIN (a container) cannot mount: try once.
    let scratch = Scratch::new("probe");
    for d in ["lower1", "lower2", "merged"] {
        fs::create_dir(scratch.0.join(d)).map_err(|e| e.to_string())?;
    }
    let lower = |d: &str| scratch.0.join(d).display().to_string();
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "ro,lowerdir={}:{}",
            lower("lower2"),
            lower("lower1")
        ))
        .arg(scratch.0.join("merged"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "cannot mount overlay: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    drop(Mount(scratch.0.join("merged")));
    Ok(())
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory removed on drop (declare it before any mount inside it).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stevedore-ovl-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An overlay mount, unmounted on drop, also when a comparison panics.
struct Mount(PathBuf);

impl Mount {
    fn new(target: &Path, options: &str) -> Mount {
        fs::create_dir_all(target).unwrap();
        run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                options,
                target.to_str().unwrap(),
            ],
        );
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn lowerdir_option(layers: &[PathBuf]) -> String {
    let top_first: Vec<&str> = layers.iter().rev().map(|p| p.to_str().unwrap()).collect();
    format!("lowerdir={}", top_first.join(":"))
}

// --- layer specs and writing them -----------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    File(String, String, u32),
    Dir(String, u32, bool),
    Symlink(String, String),
    Hardlink(String, String),
    Whiteout(String),
    Fifo(String),
    Null(String),
}

impl Op {
    fn path(&self) -> &str {
        match self {
            Op::File(p, ..)
            | Op::Dir(p, ..)
            | Op::Symlink(p, _)
            | Op::Hardlink(p, _)
            | Op::Whiteout(p)
            | Op::Fifo(p)
            | Op::Null(p) => p,
        }
    }
}

fn file(p: &str, content: &str) -> Op {
    Op::File(p.into(), content.into(), 0o644)
}
fn dir(p: &str) -> Op {
    Op::Dir(p.into(), 0o755, false)
}
fn opaque(p: &str) -> Op {
    Op::Dir(p.into(), 0o755, true)
}
fn link(p: &str, target: &str) -> Op {
    Op::Symlink(p.into(), target.into())
}
fn whiteout(p: &str) -> Op {
    Op::Whiteout(p.into())
}

/// Write one layer in overlay form. Ops that clash with earlier ops of the layer (the path
/// exists, or a parent is not a directory) are skipped; returns the ops kept.
fn write_layer(root: &Path, ops: &[Op]) -> Vec<Op> {
    fs::create_dir_all(root).unwrap();
    let mut kinds: HashMap<String, bool> = HashMap::new(); // path -> is_dir
    let mut kept = Vec::new();
    'ops: for op in ops {
        let p = op.path();
        let comps: Vec<&str> = p.split('/').collect();
        for i in 1..comps.len() {
            if kinds.get(&comps[..i].join("/")) == Some(&false) {
                continue 'ops;
            }
        }
        if kinds.contains_key(p) {
            continue;
        }
        if let Op::Hardlink(_, target) = op {
            if kinds.get(target) != Some(&false) {
                continue;
            }
        }
        for i in 1..comps.len() {
            kinds.insert(comps[..i].join("/"), true);
        }
        kinds.insert(p.to_string(), matches!(op, Op::Dir(..)));
        let full = root.join(p);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        let full_s = full.to_str().unwrap();
        match op {
            Op::File(_, content, mode) => {
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Op::Dir(_, mode, is_opaque) => {
                fs::create_dir(&full).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
                if *is_opaque {
                    run(
                        "setfattr",
                        &["-n", "trusted.overlay.opaque", "-v", "y", full_s],
                    );
                }
            }
            Op::Symlink(_, target) => std::os::unix::fs::symlink(target, &full).unwrap(),
            Op::Hardlink(_, target) => fs::hard_link(root.join(target), &full).unwrap(),
            Op::Whiteout(_) => run("mknod", &[full_s, "c", "0", "0"]),
            Op::Fifo(_) => run("mknod", &[full_s, "p"]),
            Op::Null(_) => run("mknod", &[full_s, "c", "1", "3"]),
        }
        kept.push(op.clone());
    }
    kept
}

// --- reading directories back as entries ----------------------------------------------------

/// `getfattr -R` of a tree: path (relative to `root`) → xattrs.
fn xattrs_of_tree(root: &Path) -> HashMap<String, Vec<(String, Vec<u8>)>> {
    let out = Command::new("getfattr")
        .args([
            "-R",
            "-P",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
        ])
        .arg(root)
        .output()
        .unwrap();
    let prefix = format!("{}", root.display());
    let mut map: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            let rel = p.strip_prefix(&prefix).unwrap().trim_start_matches('/');
            current = Some(rel.to_string());
        } else if let Some((name, value)) = line.split_once('=') {
            let hex = value.strip_prefix("0x").expect("hex value");
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let cur = current.clone().expect("file line first");
            map.entry(cur).or_default().push((name.to_string(), bytes));
        }
    }
    for v in map.values_mut() {
        v.sort();
    }
    map
}

fn sha256(bytes: &[u8]) -> String {
    hash(Algorithm::Sha256, bytes).to_string()
}

fn dev_major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Walk a layer directory into entries (overlay form). Regular files with several names
/// become hardlinks to the first name met.
fn walk_layer(root: &Path) -> Vec<Entry> {
    let xattrs = xattrs_of_tree(root);
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            let mut names: Vec<String> = fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).unwrap();
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_char_device() {
            let (major, minor) = dev_major_minor(md.rdev());
            EntryKind::CharDevice { major, minor }
        } else if ft.is_block_device() {
            let (major, minor) = dev_major_minor(md.rdev());
            EntryKind::BlockDevice { major, minor }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            panic!("unexpected file type at {}", full.display());
        };
        let mut entry = Entry::new(rel.clone(), kind)
            .with_mode(md.mode())
            .with_owner(md.uid(), md.gid())
            .with_size(md.size())
            .with_mtime(md.mtime());
        entry.xattrs = xattrs.get(&rel).cloned().unwrap_or_default();
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = inodes.get(&(md.dev(), md.ino())) {
                    entry.kind = EntryKind::Hardlink {
                        target: first.clone().into_bytes(),
                    };
                    out.push(entry);
                    continue;
                }
                inodes.insert((md.dev(), md.ino()), rel.clone());
            }
            entry.content = Some(sha256(&fs::read(&full).unwrap()));
        }
        out.push(entry);
    }
    out
}

// --- comparable views -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    content: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn kind_label(kind: &EntryKind) -> String {
    match kind {
        EntryKind::File => "file".into(),
        EntryKind::Dir => "dir".into(),
        EntryKind::Symlink { target } => format!("symlink->{}", String::from_utf8_lossy(target)),
        EntryKind::Hardlink { .. } => "hardlink".into(),
        EntryKind::CharDevice { major, minor } => format!("chr{major}:{minor}"),
        EntryKind::BlockDevice { major, minor } => format!("blk{major}:{minor}"),
        EntryKind::Fifo => "fifo".into(),
    }
}

fn seen_of(st: &Stat<'_>) -> Seen {
    let mut xattrs = st.entry.xattrs.clone();
    xattrs.sort();
    Seen {
        kind: kind_label(&st.entry.kind),
        mode: st.entry.mode,
        uid: st.entry.uid,
        gid: st.entry.gid,
        size: st.entry.size,
        mtime: st.entry.mtime,
        content: st.entry.content.clone(),
        xattrs,
    }
}

fn resolver_view(stack: &LayerStack) -> BTreeMap<String, Seen> {
    stack
        .iter()
        .map(|st| (String::from_utf8(st.path.to_vec()).unwrap(), seen_of(&st)))
        .collect()
}

/// What the mount shows: every path `lstat` accepts, plus the names `readdir` lists that
/// `lstat` refuses with ENOENT (the kernel lists whiteouts of directories that are not merged).
fn mount_view(mnt: &Path) -> (BTreeMap<String, Seen>, Vec<String>) {
    let xattrs = xattrs_of_tree(mnt);
    let mut view = BTreeMap::new();
    let mut listed_missing = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            mnt.to_path_buf()
        } else {
            mnt.join(&rel)
        };
        let md = match fs::symlink_metadata(&full) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                listed_missing.push(rel);
                continue;
            }
            Err(e) => panic!("lstat {}: {e}", full.display()),
        };
        let entries = walk_one(&full, &md);
        if md.is_dir() {
            let mut names: Vec<String> = fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for n in names {
                stack.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
        }
        let mut x = xattrs.get(&rel).cloned().unwrap_or_default();
        x.sort();
        view.insert(
            rel,
            Seen {
                xattrs: x,
                ..entries
            },
        );
    }
    (view, listed_missing)
}

fn walk_one(full: &Path, md: &fs::Metadata) -> Seen {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink->{}", fs::read_link(full).unwrap().display())
    } else if ft.is_file() {
        "file".into()
    } else if ft.is_char_device() {
        let (a, b) = dev_major_minor(md.rdev());
        format!("chr{a}:{b}")
    } else if ft.is_block_device() {
        let (a, b) = dev_major_minor(md.rdev());
        format!("blk{a}:{b}")
    } else if ft.is_fifo() {
        "fifo".into()
    } else {
        "other".into()
    };
    Seen {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        mtime: md.mtime(),
        content: ft.is_file().then(|| sha256(&fs::read(full).unwrap())),
        xattrs: Vec::new(),
    }
}

fn assert_views_equal(what: &str, want: &BTreeMap<String, Seen>, got: &BTreeMap<String, Seen>) {
    let mut diffs = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => diffs.push(format!("  {p:?}: only in {what}'s reference: {w:?}")),
            Some(g) if g != w => diffs.push(format!("  {p:?}:\n    want {w:?}\n    got  {g:?}")),
            _ => {}
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            diffs.push(format!("  {p:?}: unexpected: {g:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

// --- stat through symlinks, inside a chroot of the mount ------------------------------------

/// Runs only as a child of [`chroot_stats`]: chroot into the mount and `stat` each path.
#[test]
fn chroot_stat_helper() {
    let (Ok(root), Ok(list)) = (
        std::env::var(CHROOT_ROOT_VAR),
        std::env::var(CHROOT_LIST_VAR),
    ) else {
        return;
    };
    let paths = fs::read_to_string(list).unwrap();
    std::os::unix::fs::chroot(&root).unwrap();
    std::env::set_current_dir("/").unwrap();
    // libtest may have printed "test chroot_stat_helper ... " without a newline.
    let mut out = String::from("\n");
    for p in paths.lines() {
        let full = format!("/{p}");
        match fs::metadata(&full) {
            Ok(md) => {
                let s = walk_one(Path::new(&full), &md);
                out.push_str(&format!(
                    "@@\t{p}\tok\t{}\t{:o}\t{}\t{}\n",
                    s.kind,
                    s.mode,
                    s.size,
                    s.content.unwrap_or_default()
                ));
            }
            Err(e) => out.push_str(&format!("@@\t{p}\terr\t{}\n", e.raw_os_error().unwrap())),
        }
    }
    std::io::stdout().write_all(out.as_bytes()).unwrap();
}

fn chroot_stats(mnt: &Path, scratch: &Path, paths: &[String]) -> BTreeMap<String, String> {
    let list = scratch.join("stat-paths.txt");
    fs::write(&list, paths.join("\n")).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "chroot_stat_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHROOT_ROOT_VAR, mnt)
        .env(CHROOT_LIST_VAR, &list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chroot helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some(rest) = line.strip_prefix("@@\t") {
            let (p, result) = rest.split_once('\t').unwrap();
            map.insert(p.to_string(), result.to_string());
        }
    }
    let missing: Vec<&String> = paths.iter().filter(|p| !map.contains_key(*p)).collect();
    assert!(
        missing.is_empty(),
        "chroot helper did not answer {missing:?}"
    );
    map
}

fn resolver_stat_line(stack: &LayerStack, p: &str) -> String {
    match stack.stat(p.as_bytes()) {
        Ok(st) => {
            let s = seen_of(&st);
            format!(
                "ok\t{}\t{:o}\t{}\t{}",
                s.kind,
                s.mode,
                s.size,
                s.content.unwrap_or_default()
            )
        }
        Err(Error::PathNotFound { .. }) => "err\t2".into(),
        Err(Error::NotADirectory { .. }) => "err\t20".into(),
        Err(Error::SymlinkLoop { .. }) => "err\t40".into(),
        Err(e) => format!("unexpected {e}"),
    }
}

/// Paths to `stat`: every merged path, and paths through each symlink.
fn stat_probes(view: &BTreeMap<String, Seen>) -> Vec<String> {
    let mut probes: Vec<String> = view.keys().cloned().collect();
    for (p, s) in view {
        if s.kind.starts_with("symlink") {
            for suffix in ["a", "b", "c/d", "..", "../a", ".", "a/.."] {
                probes.push(format!("{p}/{suffix}"));
            }
            probes.push(format!("{p}/"));
        }
    }
    probes.sort();
    probes.dedup();
    probes
}

// --- one stack, end to end -------------------------------------------------------------------

fn index_overlay(entries: Vec<Entry>) -> LayerIndex {
    LayerIndex::from_entries(WhiteoutForm::Overlay(NS), entries).unwrap()
}

/// OCI form of a walked overlay layer, through the converters.
fn to_oci(entries: &[Entry]) -> Vec<Entry> {
    entries
        .iter()
        .flat_map(|e| overlay_to_oci(e.clone(), NS).unwrap())
        .collect()
}

/// Back to overlay form, the way an applier would write the diff dir.
fn to_overlay(entries: Vec<Entry>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        match oci_to_overlay(e, NS, PrivateXattrPolicy::Escape).unwrap() {
            ToOverlay::Create(e) => {
                if let Some(i) = out.iter().position(|x| x.path == e.path) {
                    // A directory replacing a whiteout of the same layer becomes opaque.
                    let mut e = e;
                    if e.kind.is_dir() {
                        e.xattrs.push((NS.opaque_xattr().into(), b"y".to_vec()));
                    }
                    out[i] = e;
                } else {
                    out.push(e);
                }
            }
            ToOverlay::Whiteout { path } => out.push(Entry::new(
                path,
                EntryKind::CharDevice { major: 0, minor: 0 },
            )),
            ToOverlay::MarkOpaque { dir, xattr } => match out.iter_mut().find(|x| x.path == dir) {
                Some(d) => d.xattrs.push((xattr.into(), b"y".to_vec())),
                None => out.push(Entry::dir(dir).with_xattr(xattr, "y")),
            },
            ToOverlay::Skip => {}
        }
    }
    out
}

#[derive(Default)]
struct Checked {
    paths: usize,
    stats: usize,
    /// Merged paths by kind, and stat outcomes ("ok", "err 2", "err 20", "err 40").
    coverage: BTreeMap<String, usize>,
}

impl Checked {
    fn add(&mut self, other: Checked) {
        self.paths += other.paths;
        self.stats += other.stats;
        for (k, v) in other.coverage {
            *self.coverage.entry(k).or_default() += v;
        }
    }
}

/// Build the layers on disk, mount them read-only, compare everything. Returns counts.
fn check_stack(tag: &str, layers: &[Vec<Op>]) -> Checked {
    let scratch = Scratch::new(tag);
    let dirs: Vec<PathBuf> = (0..layers.len())
        .map(|i| scratch.0.join(format!("l{i}")))
        .collect();
    for (dir, ops) in dirs.iter().zip(layers) {
        write_layer(dir, ops);
    }
    let walked: Vec<Vec<Entry>> = dirs.iter().map(|d| walk_layer(d)).collect();
    let stack = LayerStack::new(walked.iter().cloned().map(index_overlay).collect());
    let want = resolver_view(&stack);

    let mnt = scratch.0.join("merged");
    let (got, listed_missing, stats) = {
        let _mount = Mount::new(&mnt, &format!("ro,{}", lowerdir_option(&dirs)));
        let (got, listed_missing) = mount_view(&mnt);
        let probes = stat_probes(&got);
        let kernel = chroot_stats(&mnt, &scratch.0, &probes);
        (got, listed_missing, (probes, kernel))
    };
    let layout = || format!("layers (base first): {layers:#?}");
    assert_views_equal(&format!("{tag} lstat walk"), &got, &want);
    for p in &listed_missing {
        assert!(
            matches!(
                stack.resolve(p.as_bytes()).unwrap(),
                Resolution::Whiteout { .. }
            ),
            "{tag}: kernel lists {p:?} but cannot lstat it; the resolver should see a whiteout\n{}",
            layout()
        );
    }
    let (probes, kernel) = stats;
    let mut stat_diffs = Vec::new();
    for p in &probes {
        let mine = resolver_stat_line(&stack, p);
        if kernel[p] != mine {
            stat_diffs.push(format!(
                "  stat {p:?}: kernel {:?}, resolver {mine:?}",
                kernel[p]
            ));
        }
    }
    assert!(
        stat_diffs.is_empty(),
        "{tag}: stat differences\n{}\n{}",
        stat_diffs.join("\n"),
        layout()
    );

    // The same layers in the OCI form, and back to the overlay form.
    let oci: Vec<Vec<Entry>> = walked.iter().map(|w| to_oci(w)).collect();
    let oci_stack = LayerStack::new(
        oci.iter()
            .map(|e| LayerIndex::from_entries(WhiteoutForm::Oci, e.clone()).unwrap())
            .collect(),
    );
    assert_views_equal(
        &format!("{tag} OCI form"),
        &want,
        &resolver_view(&oci_stack),
    );
    let back = LayerStack::new(
        oci.into_iter()
            .map(|e| index_overlay(to_overlay(e)))
            .collect(),
    );
    assert_views_equal(
        &format!("{tag} OCI→overlay form"),
        &want,
        &resolver_view(&back),
    );
    for p in &probes {
        assert_eq!(
            resolver_stat_line(&oci_stack, p),
            resolver_stat_line(&stack, p),
            "{tag}: stat {p:?} in OCI form"
        );
    }
    let mut coverage = BTreeMap::new();
    for seen in got.values() {
        let kind = seen.kind.split("->").next().unwrap().to_string();
        *coverage.entry(kind).or_default() += 1;
    }
    for p in &probes {
        let outcome = kernel[p].split('\t').take(2).collect::<Vec<_>>().join(" ");
        let outcome = if outcome.starts_with("ok") {
            "stat ok".into()
        } else {
            format!("stat {outcome}")
        };
        *coverage.entry(outcome).or_default() += 1;
    }
    *coverage.entry("listed but ENOENT".into()).or_default() += listed_missing.len();
    Checked {
        paths: got.len(),
        stats: probes.len(),
        coverage,
    }
}

// --- random stacks ---------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn random_path(rng: &mut XorShift) -> String {
    let depth = 1 + rng.below(3);
    (0..depth)
        .map(|_| *rng.pick(&["a", "b", "c", "d"]))
        .collect::<Vec<_>>()
        .join("/")
}

fn random_target(rng: &mut XorShift) -> String {
    match rng.below(10) {
        0..=3 => random_path(rng),
        4 | 5 => format!("{}{}", "../".repeat(1 + rng.below(3)), random_path(rng)),
        6 | 7 => format!("/{}", random_path(rng)),
        8 => format!("/../{}", random_path(rng)),
        _ => rng
            .pick(&[".", "..", "/", "../../..", "a/", "b/.."])
            .to_string(),
    }
}

fn random_layer(rng: &mut XorShift, seed: u64, layer: usize) -> Vec<Op> {
    let n = 6 + rng.below(16);
    let mut ops = Vec::new();
    let mut files: Vec<String> = Vec::new();
    for i in 0..n {
        let p = random_path(rng);
        let op = match rng.below(20) {
            0..=5 => {
                let mode = *rng.pick(&[0o644, 0o600, 0o755, 0o444]);
                files.push(p.clone());
                Op::File(p, format!("seed {seed} layer {layer} op {i}\n"), mode)
            }
            6..=8 => Op::Dir(p, *rng.pick(&[0o755, 0o700, 0o750]), false),
            9 | 10 => Op::Dir(p, 0o755, true),
            11..=14 => Op::Symlink(p, random_target(rng)),
            15..=17 => Op::Whiteout(p),
            18 if !files.is_empty() => Op::Hardlink(p, rng.pick(&files).clone()),
            18 => Op::Fifo(p),
            _ => Op::Null(p),
        };
        ops.push(op);
    }
    ops
}

#[test]
fn random_stacks_match_the_kernel() {
    if !kernel_overlay_available() {
        return;
    }
    // STEVEDORE_OVL_RANDOM_STACKS=N runs more stacks (default 20).
    let count: u64 = std::env::var("STEVEDORE_OVL_RANDOM_STACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut total = Checked::default();
    for seed in 1..=count {
        let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let layers: Vec<Vec<Op>> = (0..2 + rng.below(5))
            .map(|l| random_layer(&mut rng, seed, l))
            .collect();
        total.add(check_stack(&format!("random-{seed}"), &layers));
    }
    eprintln!(
        "random stacks: compared {} paths and {} stat probes with the kernel: {:?}",
        total.paths, total.stats, total.coverage
    );
}

// --- hand-written stacks ---------------------------------------------------------------------

#[test]
fn hand_written_stacks_match_the_kernel() {
    if !kernel_overlay_available() {
        return;
    }
    let seed = vec![
        vec![file("concrete", "bad concrete\n"), file("rebar", "rebar\n")],
        vec![
            file("concrete", "good concrete\n"),
            file("marble", "marble\n"),
        ],
        vec![file("frame", "main structure\n"), whiteout("marble")],
    ];
    let opaque_dirs = vec![
        vec![file("d/x", "x"), file("d/sub/y", "y"), file("e/keep", "k")],
        vec![opaque("d"), file("d/z", "z"), opaque("e")],
        vec![file("d/top", "t")],
    ];
    let file_over_dir = vec![
        vec![file("a/b/c", "c"), file("a/b/d/e", "e")],
        vec![file("a/b", "now a file")],
    ];
    let dir_over_file = vec![
        vec![file("a/b/old", "old"), file("x", "x")],
        vec![file("a/b", "file")],
        vec![file("a/b/new", "new"), file("x/y", "y")],
    ];
    let whiteouts = vec![
        vec![file("d/x", "x"), file("d/y/z", "z"), file("f", "f")],
        vec![whiteout("d"), whiteout("f"), whiteout("never-existed")],
        vec![file("d/new", "n")],
    ];
    let symlinked_dirs = vec![
        vec![
            file("usr/lib/x", "x"),
            link("lib", "usr/lib"),
            link("abslib", "/usr/lib"),
        ],
        vec![file("usr/lib/y", "y")],
        vec![file("lib/z", "z")],
    ];
    let escapes = vec![
        vec![
            file("etc/passwd", "inside"),
            link("a/abs", "/../../etc/passwd"),
            link("a/rel", "../../../../etc/passwd"),
            link("a/root", "/"),
            link("a/dotdot", ".."),
            link("a/up", "../../.."),
        ],
        vec![link("etc/shadow", "../../../../etc/passwd")],
    ];
    let mut loop_ops = vec![
        link("a", "b"),
        link("b", "a"),
        link("self", "self"),
        link("dirloop", "dirloop/x"),
        file("target", "t"),
    ];
    for i in 0..40 {
        let next = if i == 39 {
            "target".into()
        } else {
            format!("c{}", i + 1)
        };
        loop_ops.push(link(&format!("c{i}"), &next));
    }
    for i in 0..41 {
        let next = if i == 40 {
            "target".into()
        } else {
            format!("d{}", i + 1)
        };
        loop_ops.push(link(&format!("d{i}"), &next));
    }
    let loops = vec![loop_ops, vec![dir("other")]];
    let hardlinks = vec![
        vec![
            Op::File("f".into(), "data".into(), 0o600),
            Op::Hardlink("h".into(), "f".into()),
            Op::Hardlink("dir/h2".into(), "f".into()),
        ],
        vec![whiteout("f")],
    ];
    let base_whiteouts = vec![
        // Whiteouts in the base layer, and in a directory only one layer has (the kernel
        // lists those in readdir but lstat fails).
        vec![whiteout("w"), file("solo/x", "x"), whiteout("solo/w")],
        vec![file("top", "t"), dir("only-top"), whiteout("only-top/w")],
    ];
    let mut total = Checked::default();
    for (tag, layers) in [
        ("seed", seed),
        ("opaque", opaque_dirs),
        ("file-over-dir", file_over_dir),
        ("dir-over-file", dir_over_file),
        ("whiteouts", whiteouts),
        ("symlinked-dirs", symlinked_dirs),
        ("escapes", escapes),
        ("loops", loops),
        ("hardlinks", hardlinks),
        ("base-whiteouts", base_whiteouts),
    ] {
        total.add(check_stack(tag, &layers));
    }
    eprintln!(
        "hand-written stacks: compared {} paths and {} stat probes with the kernel: {:?}",
        total.paths, total.stats, total.coverage
    );
}

// --- the seed experiment with an upper dir ---------------------------------------------------

#[test]
fn seed_experiment_with_upper_dir_matches_the_kernel() {
    if !kernel_overlay_available() {
        return;
    }
    let scratch = Scratch::new("seed-upper");
    let d = |n: &str| scratch.0.join(n);
    write_layer(
        &d("material"),
        &[file("concrete", "bad concrete\n"), file("rebar", "rebar\n")],
    );
    write_layer(
        &d("material2"),
        &[
            file("concrete", "good concrete\n"),
            file("marble", "marble\n"),
        ],
    );
    fs::create_dir_all(d("build")).unwrap();
    fs::create_dir_all(d("work")).unwrap();
    let merge = d("merge");
    let options = format!(
        "lowerdir={}:{},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        d("material2").display(),
        d("material").display(),
        d("build").display(),
        d("work").display()
    );
    let merged = {
        let _mount = Mount::new(&merge, &options);
        let mut names: Vec<String> = fs::read_dir(&merge)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["concrete", "marble", "rebar"]);
        assert_eq!(
            fs::read_to_string(merge.join("concrete")).unwrap(),
            "good concrete\n"
        );
        fs::write(merge.join("frame"), "main structure\n").unwrap();
        fs::remove_file(merge.join("marble")).unwrap();
        mount_view(&merge)
    };
    let (got, listed_missing) = merged;
    assert!(listed_missing.is_empty());
    let names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["", "concrete", "frame", "rebar"]);

    // The upper dir holds `frame` and a whiteout for `marble`.
    let build = walk_layer(&d("build"));
    let find = |p: &str| build.iter().find(|e| e.path == p.as_bytes()).unwrap();
    assert_eq!(find("frame").kind, EntryKind::File);
    assert_eq!(
        find("marble").kind,
        EntryKind::CharDevice { major: 0, minor: 0 }
    );

    let layers: Vec<Vec<Entry>> = vec![
        walk_layer(&d("material")),
        walk_layer(&d("material2")),
        build,
    ];
    let stack = LayerStack::new(layers.iter().cloned().map(index_overlay).collect());
    assert_views_equal("seed with upper", &got, &resolver_view(&stack));
    assert_eq!(
        stack.resolve(b"marble").unwrap(),
        Resolution::Whiteout { layer: 2 }
    );
    // As an OCI layer the upper dir is `frame` plus `.wh.marble`.
    let oci_build = to_oci(&layers[2]);
    let oci_paths: Vec<&[u8]> = oci_build.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(oci_paths, [&b""[..], b"frame", b".wh.marble"]);
    let oci_stack = LayerStack::new(vec![
        LayerIndex::from_entries(WhiteoutForm::Oci, to_oci(&layers[0])).unwrap(),
        LayerIndex::from_entries(WhiteoutForm::Oci, to_oci(&layers[1])).unwrap(),
        LayerIndex::from_entries(WhiteoutForm::Oci, oci_build).unwrap(),
    ]);
    assert_views_equal(
        "seed with upper, OCI form",
        &got,
        &resolver_view(&oci_stack),
    );
}
