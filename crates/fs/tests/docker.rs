//! Against the real thing: a private dockerd (own data root, exec root, pidfile, socket, no
//! networking) builds a FROM-scratch image whose layers delete files, make opaque
//! directories, replace files by directories and back, and add hard links, symlinks, devices,
//! FIFOs, setuid bits and foreign owners. `docker save` gives the layer tars; then
//!
//! * each layer applied in `overlay` mode must equal dockerd's own diff dir for it
//!   (`overlay2/<cache-id>/diff`, found through `image/overlay2/layerdb/sha256/<chain-id>`):
//!   paths, types, modes, owners, mtimes, xattrs, device numbers and content hashes;
//! * all layers applied in `apply` mode must equal `umoci unpack` of the same image (converted
//!   with `skopeo copy docker-archive:… oci:…`) and the kernel overlay mount of dockerd's diff
//!   dirs.
//!
//! dockerd is stopped and everything removed even when a comparison fails. Needs root,
//! dockerd, the docker client, busybox (static), umoci and skopeo; without them the test
//! prints why and passes, unless `STEVEDORE_REQUIRE_DOCKER=1`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stevedore_core::digest::{hash, Algorithm, Digest};
use stevedore_fs::{apply_layer, flatten_layers, ApplyOptions, WhiteoutMode};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";

fn bin(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

fn available() -> Result<(), String> {
    if !is_root() {
        return Err("not root".into());
    }
    for (env, default) in [
        ("STEVEDORE_DOCKERD", DOCKERD),
        ("STEVEDORE_DOCKER", DOCKER),
        ("STEVEDORE_BUSYBOX", BUSYBOX),
    ] {
        let p = bin(env, default);
        if !Path::new(&p).exists() {
            return Err(format!("{p} is missing"));
        }
    }
    for tool in ["umoci", "skopeo", "mount", "umount"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("{tool} is missing"));
        }
    }
    Ok(())
}

// --- a private dockerd -----------------------------------------------------------------------

struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    fn start() -> Dockerd {
        // Short: containerd's sockets live below it and sun_path holds 108 bytes.
        let base = std::env::var("STEVEDORE_IT_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let dir = PathBuf::from(base).join(format!("sd-rs-dockerd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let mut d = Dockerd { dir, child: None };
        for sub in ["data", "exec", "client"] {
            fs::create_dir(d.p(sub)).unwrap();
        }
        fs::write(d.p("client/config.json"), "{\"auths\":{}}").unwrap();
        fs::write(
            d.p("daemon.json"),
            format!(
                "{{\"deprecated-key-path\": \"{}\"}}",
                d.p("key.json").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(d.p("dockerd.log")).unwrap();
        let cgroup_parent = d.cgroup_parent();
        let child = Command::new(bin("STEVEDORE_DOCKERD", DOCKERD))
            .arg("--config-file")
            .arg(d.p("daemon.json"))
            .arg("--data-root")
            .arg(d.p("data"))
            .arg("--exec-root")
            .arg(d.p("exec"))
            .arg("--pidfile")
            .arg(d.p("docker.pid"))
            .arg("--host")
            .arg(d.host())
            .args([
                "--storage-driver",
                "overlay2",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--cgroup-parent",
                &cgroup_parent,
                "--shutdown-timeout",
                "3",
            ])
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        d.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = d
                .docker_raw(&["version", "--format", "{{.Server.Version}}"])
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if let Some(Ok(Some(status))) = d.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited ({status}):\n{}", d.logs());
            }
            if Instant::now() > deadline {
                panic!("dockerd did not come up:\n{}", d.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.p("docker.sock").display())
    }

    fn cgroup_parent(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn logs(&self) -> String {
        let log = fs::read_to_string(self.p("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn docker_raw(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(bin("STEVEDORE_DOCKER", DOCKER))
            .arg("--host")
            .arg(self.host())
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.p("client"))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false")
            .output()
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_raw(args).unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}{}\n--- dockerd ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `overlay2/<cache-id>/diff` of the layer with this chain id.
    fn diff_dir(&self, chain_id: &Digest) -> PathBuf {
        let cache = self.p(&format!(
            "data/image/overlay2/layerdb/sha256/{}/cache-id",
            chain_id.hex()
        ));
        let id = fs::read_to_string(&cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display()));
        self.p(&format!("data/overlay2/{}/diff", id.trim()))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever survived: containerd, shims and containers name the dir or sit in its cgroup.
        let dir = self.dir.display().to_string();
        let cg = format!("/{}", self.cgroup_parent());
        for _ in 0..3 {
            let mut pids = Vec::new();
            for entry in fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if pid as u32 == std::process::id() {
                    continue;
                }
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                let mentions = String::from_utf8_lossy(&cmd).contains(&dir);
                let inside = cgroups.lines().any(|l| {
                    let path = l.splitn(3, ':').nth(2).unwrap_or("");
                    path == cg || path.starts_with(&format!("{cg}/"))
                });
                if mentions || inside {
                    pids.push(pid);
                }
            }
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for _ in 0..3 {
            let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
                .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
                .collect();
            if mounts.is_empty() {
                break;
            }
            for m in mounts.iter().rev() {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        // The containers' cgroup, in every hierarchy (v1 controllers or the v2 unified one).
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in info.lines() {
            let fstype = line.split(" - ").nth(1).and_then(|t| t.split(' ').next());
            if matches!(fstype, Some("cgroup") | Some("cgroup2")) {
                if let Some(root) = line.split(' ').nth(4) {
                    let _ =
                        remove_cgroup(&Path::new(&unescape_mount(root)).join(self.cgroup_parent()));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            let _ = remove_cgroup(&e.path());
        }
    }
    fs::remove_dir(dir)
}

// --- the image -------------------------------------------------------------------------------

const RUN1: &str = "set -e; B=/bin/busybox; \
    $B rm /etc/motd; \
    $B rm -rf /var/cache; $B mkdir -p /var/cache; echo new > /var/cache/new; \
    $B rm /replace-me; $B mkdir /replace-me; echo d > /replace-me/now-a-dir; \
    $B rm -rf /dir-to-file; echo file > /dir-to-file; \
    $B ln /etc/passwd /etc/passwd-link; \
    $B ln -s /etc/passwd /abs-link; $B ln -s ../etc/group /usr/rel-link; \
    $B chmod 4755 /data/suid; $B chmod 2750 /data/owned; $B chown 1000:1001 /data/owned; \
    $B chmod 0700 /data/private-dir; $B chmod 1777 /data/sticky; \
    $B mkfifo -m 0640 /data/fifo; $B mknod -m 0666 /data/null c 1 3; $B mknod /data/loop b 7 0; \
    $B touch -d '2001-02-03 04:05:06' /data/old; \
    $B rm -rf /usr/lib/sub; \
    $B rm /data/hard2";

const RUN2: &str = "set -e; B=/bin/busybox; \
    $B rm /etc/passwd-link; \
    $B rm -rf /replace-me; \
    echo again > /etc/passwd; \
    $B mkdir -p /var/cache/deeper/x; \
    $B rm -rf /data; $B mkdir /data; echo fresh > /data/fresh; \
    $B rm /lnk; $B mkdir /lnk; \
    $B chown -h 5:6 /abs-link";

fn context(dir: &Path) {
    let w = |rel: &str, content: &str, mode: u32| {
        let p = dir.join("root").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    w("etc/group", "root:x:0:\n", 0o644);
    w("etc/motd", "welcome\n", 0o644);
    w("usr/lib/libc.so", "not really elf", 0o755);
    w("usr/lib/sub/deep/file", "deep", 0o600);
    w("var/cache/a", "a", 0o644);
    w("var/cache/sub/b", "b", 0o644);
    w("replace-me", "a file", 0o644);
    w("dir-to-file/x", "x", 0o644);
    w("data/suid", "#!/bin/sh\n", 0o755);
    w("data/owned", "mine", 0o644);
    w("data/private-dir/f", "p", 0o644);
    fs::create_dir_all(dir.join("root/data/sticky")).unwrap();
    w("data/old", "old", 0o644);
    w("data/hard1", "linked", 0o644);
    fs::hard_link(dir.join("root/data/hard1"), dir.join("root/data/hard2")).unwrap();
    std::os::unix::fs::symlink("etc/passwd", dir.join("root/lnk")).unwrap();
    fs::copy(bin("STEVEDORE_BUSYBOX", BUSYBOX), dir.join("busybox")).unwrap();
    let json = |s: &str| format!("{s:?}");
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY root/ /\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", {}]\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", {}]\n",
            json(RUN1),
            json(RUN2)
        ),
    )
    .unwrap();
}

/// Layer tars of a `docker save` archive, base first.
fn saved_layers(save: &[u8]) -> Vec<Vec<u8>> {
    let members = stevedore_core::tar::read_archive(save, Default::default()).unwrap();
    let by_name: BTreeMap<String, &Vec<u8>> = members
        .iter()
        .map(|(h, d)| (String::from_utf8_lossy(&h.path).into_owned(), d))
        .collect();
    let manifest = String::from_utf8_lossy(by_name["manifest.json"]).into_owned();
    let layers = &manifest[manifest
        .find("\"Layers\":[")
        .expect("Layers in manifest.json")
        + 10..];
    let layers = &layers[..layers.find(']').unwrap()];
    layers
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .map(|name| by_name[&name].to_vec())
        .collect()
}

/// A snapshot in the form both sides can be compared in: overlay-private xattrs other than
/// the opaque marker dropped (driver state such as `origin`/`impure`), and whiteout devices
/// without mtime (dockerd leaves them at the time it made them).
fn diff_view(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot(root, &[], true)
        .into_iter()
        .map(|(p, d)| {
            let d = drop_xattrs(&d, |k| {
                k.starts_with("trusted.overlay.") && k != "trusted.overlay.opaque"
            });
            let d = if d.starts_with("char 0:0") {
                drop_mtime(&d)
            } else {
                d
            };
            (p, d)
        })
        .collect()
}

fn merged_view(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot(root, &[], true)
        .into_iter()
        .map(|(p, d)| (p, drop_xattrs(&d, |k| k.starts_with("trusted.overlay."))))
        .collect()
}

fn drop_mtime(d: &str) -> String {
    match d.find(" mtime=") {
        Some(i) => {
            let j = d[i + 1..].find(' ').unwrap() + i + 1;
            format!("{}{}", &d[..i], &d[j..])
        }
        None => d.to_string(),
    }
}

/// Removes xattrs whose name matches from a `describe` line.
fn drop_xattrs(d: &str, drop: impl Fn(&str) -> bool) -> String {
    let Some(i) = d.find(" xattrs={") else {
        return d.to_string();
    };
    let body = &d[i + " xattrs={".len()..d.len() - 1];
    if body.is_empty() {
        return d.to_string();
    }
    // Entries look like `"name": [1, 2, 3]`.
    let mut kept = Vec::new();
    for part in body.split("], ") {
        let part = part.trim_end_matches(']');
        let name = part.trim_start_matches('"').split('"').next().unwrap_or("");
        if !drop(name) {
            kept.push(format!("{part}]"));
        }
    }
    format!("{} xattrs={{{}}}", &d[..i], kept.join(", "))
}

fn diff_maps(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{}:\n    {:?}\n    {:?}", k.display(), a.get(k), b.get(k)))
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn layers_match_dockerd_umoci_and_the_kernel() {
    if let Err(why) = available() {
        if std::env::var("STEVEDORE_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("docker test required but unavailable: {why}");
        }
        eprintln!("skipping docker comparison: {why}");
        return;
    }
    let scratch = Scratch::new("docker");
    let d = Dockerd::start();
    let ctx = scratch.path("ctx");
    fs::create_dir(&ctx).unwrap();
    context(&ctx);
    let tag = "stevedore-layer-test:latest";
    d.docker(&[
        "build",
        "--network",
        "none",
        "--quiet",
        "-t",
        tag,
        ctx.to_str().unwrap(),
    ]);
    let save = scratch.path("image.tar");
    d.docker(&["save", "-o", save.to_str().unwrap(), tag]);
    let layers = saved_layers(&fs::read(&save).unwrap());
    assert_eq!(layers.len(), 4, "busybox, COPY, RUN, RUN");

    // 1. Every layer in overlay mode equals dockerd's diff dir.
    let mut chain: Option<Digest> = None;
    let mut diff_dirs = Vec::new();
    let mut problems = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let diff_id = hash(Algorithm::Sha256, layer);
        chain = Some(match chain {
            None => diff_id.clone(),
            Some(parent) => hash(Algorithm::Sha256, format!("{parent} {diff_id}").as_bytes()),
        });
        let theirs = d.diff_dir(chain.as_ref().unwrap());
        let ours = scratch.path(&format!("layer{i}"));
        let gz = gzip(layer);
        let o = ApplyOptions {
            mode: WhiteoutMode::Overlay,
            expected_digest: Some(hash(Algorithm::Sha256, &gz)),
            expected_diff_id: Some(diff_id.clone()),
            ..ApplyOptions::default()
        };
        let r = apply_layer(&gz[..], &ours, &o, |_| {}).unwrap();
        assert!(r.skipped.is_empty(), "layer {i}: {:?}", r.skipped);
        let (want, got) = (diff_view(&theirs), diff_view(&ours));
        let diff = diff_maps(&want, &got);
        if !diff.is_empty() {
            problems.push(format!("layer {i} (dockerd vs ours):\n{}", diff.join("\n")));
        }
        eprintln!(
            "layer {i}: {} paths, {} entries, equal to dockerd's diff dir: {}",
            want.len(),
            r.entries,
            diff.is_empty()
        );
        diff_dirs.push(theirs);
    }
    // What the layers hold, so the comparison is not vacuous.
    let l2 = diff_view(&scratch.path("layer2"));
    assert!(l2[Path::new("etc/motd")].starts_with("char 0:0"), "{l2:#?}");
    assert!(
        l2[Path::new("var/cache")].contains("trusted.overlay.opaque"),
        "{l2:#?}"
    );
    assert!(l2[Path::new("data/null")].starts_with("char 1:3"));
    assert!(l2[Path::new("data/suid")].contains("mode=4755"));
    assert!(l2[Path::new("data/owned")].contains("owner=1000:1001"));

    // 2. apply mode over all layers = umoci unpack = the kernel's overlay mount of dockerd's
    // diff dirs.
    let flat = scratch.path("flat");
    fs::create_dir(&flat).unwrap();
    for layer in &layers {
        apply_layer(
            &layer[..],
            &flat,
            &ApplyOptions {
                mode: WhiteoutMode::Apply,
                ..ApplyOptions::default()
            },
            |_| {},
        )
        .unwrap();
    }
    let ours = merged_view(&flat);

    let oci = scratch.path("oci");
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            &format!("docker-archive:{}", save.display()),
            &format!("oci:{}:latest", oci.display()),
        ],
    );
    let bundle = scratch.path("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:latest", oci.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let umoci = merged_view(&bundle.join("rootfs"));
    let diff = diff_maps(&umoci, &ours);
    if !diff.is_empty() {
        problems.push(format!("apply mode (umoci vs ours):\n{}", diff.join("\n")));
    }
    // The parallel flatten (staged, then replayed) gives the same tree.
    let flat2 = scratch.path("flat-parallel");
    fs::create_dir(&flat2).unwrap();
    flatten_layers(
        layers
            .iter()
            .map(|l| {
                let o = ApplyOptions {
                    mode: WhiteoutMode::Apply,
                    ..ApplyOptions::default()
                };
                (&l[..], o)
            })
            .collect(),
        &flat2,
        4,
        |_| {},
    )
    .unwrap();
    let diff = diff_maps(&umoci, &merged_view(&flat2));
    if !diff.is_empty() {
        problems.push(format!("flatten (umoci vs ours):\n{}", diff.join("\n")));
    }

    let merged = scratch.path("merged");
    fs::create_dir(&merged).unwrap();
    let lower: Vec<String> = diff_dirs
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    run(
        "mount",
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("ro,lowerdir={}", lower.join(":")),
            merged.to_str().unwrap(),
        ],
    );
    let kernel = {
        let _unmount = Unmount(merged.clone());
        merged_view(&merged)
    };
    let diff = diff_maps(&kernel, &ours);
    if !diff.is_empty() {
        problems.push(format!(
            "apply mode (kernel overlay vs ours):\n{}",
            diff.join("\n")
        ));
    }
    eprintln!(
        "apply mode: {} paths; umoci {}, kernel overlay {}",
        ours.len(),
        umoci.len(),
        kernel.len()
    );
    assert!(ours.contains_key(Path::new("data/fresh")));
    assert!(!ours.contains_key(Path::new("etc/motd")));
    drop(d);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
