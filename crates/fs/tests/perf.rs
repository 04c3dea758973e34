//! A rough throughput comparison with GNU tar, pigz and zstd. Ignored by default; run with
//! `cargo test --release -p stevedore-fs --test perf -- --ignored --nocapture`
//! (`STEVEDORE_PERF_FILES` / `STEVEDORE_PERF_MIB` change the size of the tree,
//! `STEVEDORE_PERF_ONLY=apply` skips the create part; the tree lives in `TMPDIR`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use stevedore_fs::{
    apply_layer, create_layer, ApplyOptions, CreateCompression, CreateOptions, WhiteoutMode,
};

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
}

/// A tree of `files` files totalling about `mib` MiB: text-like data with incompressible
/// stretches (gzip gets about 3:1, as on typical layers), in a few hundred directories.
fn make_tree(root: &Path, files: usize, mib: usize) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let words: Vec<String> = (0..4096)
        .map(|i| format!("w{:x}{}", i * 7919 % 65521, "abcdefgh".repeat(i % 3)))
        .collect();
    let mut pool = Vec::with_capacity(64 << 20);
    while pool.len() < 64 << 20 {
        if rng.next() % 10 < 4 {
            for _ in 0..512 {
                pool.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            for _ in 0..700 {
                pool.extend_from_slice(words[(rng.next() % 4096) as usize].as_bytes());
                pool.push(b' ');
            }
        }
    }
    let avg = (mib << 20) / files;
    for i in 0..files {
        let dir = root.join(format!("d{:03}/s{}", i % 250, i % 7));
        fs::create_dir_all(&dir).unwrap();
        // Sizes from tiny to 8x the average.
        let size = match rng.next() % 10 {
            0..=5 => (rng.next() as usize) % (avg / 4 + 1),
            6..=8 => avg + (rng.next() as usize) % avg,
            _ => (rng.next() as usize) % (avg * 6 + 1),
        };
        let start = (rng.next() as usize) % (pool.len() - size.min(pool.len() - 1));
        let end = (start + size).min(pool.len());
        fs::write(dir.join(format!("f{i}.dat")), &pool[start..end]).unwrap();
    }
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Median of `runs` timings of `f` (each in a fresh state from `reset`).
fn time(runs: usize, mut reset: impl FnMut(), mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            reset();
            sh("sync");
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[runs / 2]
}

#[test]
#[ignore]
fn throughput_against_tar_pigz_and_zstd() {
    let files: usize = std::env::var("STEVEDORE_PERF_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let mib: usize = std::env::var("STEVEDORE_PERF_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(640);
    let scratch = Scratch::new("perf");
    let src = scratch.path("src");
    make_tree(&src, files, mib);
    let s = |p: &str| scratch.path(p).display().to_string();
    sh(&format!(
        "cd {} && tar -cf {} --sort=name . && pigz -6 -k -c {} > {} && zstd -q -3 -k {} -o {}",
        src.display(),
        s("layer.tar"),
        s("layer.tar"),
        s("layer.tar.gz"),
        s("layer.tar"),
        s("layer.tar.zst")
    ));
    let size = |p: &str| fs::metadata(scratch.path(p)).unwrap().len() as f64 / 1e6;
    let tar_mb = size("layer.tar");
    eprintln!(
        "\n{files} files; tar {tar_mb:.0} MB, gzip {:.0} MB, zstd {:.0} MB; {} CPUs\n",
        size("layer.tar.gz"),
        size("layer.tar.zst"),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let out = scratch.path("out");
    // Old outputs are moved aside, not deleted: on a real disk the deletion of the last run
    // (ext4 with `discard`) would slow down the next one.
    let trash = scratch.path("trash");
    fs::create_dir(&trash).unwrap();
    let n = std::cell::Cell::new(0);
    let reset = || {
        if out.exists() {
            n.set(n.get() + 1);
            fs::rename(&out, trash.join(n.get().to_string())).unwrap();
        }
    };
    let reset_mk = || {
        reset();
        fs::create_dir(&out).unwrap();
    };
    let report = |what: &str, secs: f64| {
        let created = scratch.path("created");
        let out = match fs::metadata(&created) {
            Ok(m) if what.contains("create") || what.contains("-c") => {
                let mb = m.len() as f64 / 1e6;
                let _ = fs::remove_file(&created);
                format!("  -> {mb:.1} MB")
            }
            _ => String::new(),
        };
        eprintln!(
            "{what:<48} {secs:>6.2} s  {:>6.0} MB/s (uncompressed){out}",
            tar_mb / secs
        );
    };
    let runs = 3;
    let ours = |file: &str, pipelined: bool| {
        let o = ApplyOptions {
            mode: WhiteoutMode::Overlay,
            pipelined,
            ..ApplyOptions::default()
        };
        let f = fs::File::open(scratch.path(file)).unwrap();
        apply_layer(
            std::io::BufReader::with_capacity(1 << 20, f),
            &out,
            &o,
            |_| {},
        )
        .unwrap();
    };
    eprintln!("-- apply --");
    report(
        "stevedore apply_layer gzip (pipelined)",
        time(runs, reset, || ours("layer.tar.gz", true)),
    );
    report(
        "stevedore apply_layer gzip (one thread)",
        time(runs, reset, || ours("layer.tar.gz", false)),
    );
    report(
        "tar -xzf",
        time(runs, reset_mk, || {
            sh(&format!("tar -xzf {} -C {}", s("layer.tar.gz"), s("out")))
        }),
    );
    if have("pigz") {
        report(
            "pigz -dc | tar -x",
            time(runs, reset_mk, || {
                sh(&format!(
                    "pigz -dc {} | tar -x -C {}",
                    s("layer.tar.gz"),
                    s("out")
                ))
            }),
        );
    }
    report(
        "stevedore apply_layer zstd (pipelined)",
        time(runs, reset, || ours("layer.tar.zst", true)),
    );
    report(
        "tar --zstd -xf",
        time(runs, reset_mk, || {
            sh(&format!(
                "tar --zstd -xf {} -C {}",
                s("layer.tar.zst"),
                s("out")
            ))
        }),
    );
    report(
        "stevedore apply_layer plain tar",
        time(runs, reset, || ours("layer.tar", true)),
    );
    report(
        "tar -xf",
        time(runs, reset_mk, || {
            sh(&format!("tar -xf {} -C {}", s("layer.tar"), s("out")))
        }),
    );

    if std::env::var("STEVEDORE_PERF_ONLY").as_deref() == Ok("apply") {
        return;
    }
    eprintln!("-- create --");
    let created = scratch.path("created");
    let ours_create = |compression| {
        let o = CreateOptions {
            compression,
            ..CreateOptions::default()
        };
        let f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&created).unwrap());
        create_layer(&src, &o, f, |_| {}).unwrap();
    };
    let none = || {};
    report(
        "stevedore create_layer gzip -6 (pipelined)",
        time(runs, none, || {
            ours_create(CreateCompression::Gzip { level: 6 })
        }),
    );
    report(
        "tar -czf (gzip -6)",
        time(runs, none, || {
            sh(&format!(
                "cd {} && tar -czf {} .",
                src.display(),
                s("created")
            ))
        }),
    );
    report(
        "tar -cf - | pigz -6",
        time(runs, none, || {
            sh(&format!(
                "cd {} && tar -cf - . | pigz -6 > {}",
                src.display(),
                s("created")
            ))
        }),
    );
    report(
        "stevedore create_layer gzip -1",
        time(runs, none, || {
            ours_create(CreateCompression::Gzip { level: 1 })
        }),
    );
    report(
        "stevedore create_layer zstd -3",
        time(runs, none, || {
            ours_create(CreateCompression::Zstd { level: 3 })
        }),
    );
    report(
        "tar --zstd -cf (zstd -3)",
        time(runs, none, || {
            sh(&format!(
                "cd {} && tar --zstd -cf {} .",
                src.display(),
                s("created")
            ))
        }),
    );
    report(
        "stevedore create_layer none",
        time(runs, none, || ours_create(CreateCompression::None)),
    );
    report(
        "tar -cf",
        time(runs, none, || {
            sh(&format!(
                "cd {} && tar -cf {} .",
                src.display(),
                s("created")
            ))
        }),
    );
}
