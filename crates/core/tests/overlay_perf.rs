//! A rough throughput check of the layer-stack resolver on a 50-layer stack. Ignored by
//! default; run with
//! `cargo test --release -p stevedore-core --test overlay_perf -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use stevedore_core::overlay::{Entry, LayerIndex, LayerStack, WhiteoutForm};

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
}

/// A path like `usr/share/pkg17/sub3/file42.txt` from a space of about 200k paths.
fn path(rng: &mut XorShift) -> String {
    let top = ["usr/share", "usr/lib", "etc", "var/lib", "opt/app"][rng.below(5)];
    format!(
        "{top}/pkg{}/sub{}/file{}.txt",
        rng.below(200),
        rng.below(10),
        rng.below(20)
    )
}

#[test]
#[ignore]
fn resolver_throughput_on_50_layers() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let layers: Vec<LayerIndex> = (0..50)
        .map(|l| {
            let mut entries: Vec<Entry> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..10_000 {
                let p = path(&mut rng);
                if !seen.insert(p.clone()) {
                    continue;
                }
                let e = match rng.below(50) {
                    0 => {
                        let (dir, name) = p.rsplit_once('/').unwrap();
                        Entry::file(format!("{dir}/.wh.{name}"))
                    }
                    _ => Entry::file_with(p, "x").with_mtime(l),
                };
                entries.push(e);
            }
            entries.push(Entry::symlink("lib", "usr/lib"));
            LayerIndex::from_entries(WhiteoutForm::Oci, entries).unwrap()
        })
        .collect();
    let nodes: usize = layers.iter().map(|l| l.len()).sum();

    let t = Instant::now();
    let stack = LayerStack::new(layers);
    let build = t.elapsed();
    println!(
        "50 layers, {nodes} index nodes, {} visible paths: built in {build:?}",
        stack.visible_len()
    );

    let mut probes: Vec<Vec<u8>> = stack.iter().map(|s| s.path.to_vec()).collect();
    let n = probes.len();
    for i in 0..n / 4 {
        probes.push(path(&mut XorShift(i as u64 + 1)).into_bytes()); // some absent or hidden
    }
    // Random order: no help from the layout of the map.
    let mut shuffle = XorShift(7);
    for i in (1..probes.len()).rev() {
        probes.swap(i, shuffle.below(i + 1));
    }
    let through_symlink: Vec<Vec<u8>> = probes
        .iter()
        .filter_map(|p| p.strip_prefix(b"usr/lib/").map(|r| [b"lib/", r].concat()))
        .collect();
    let rounds = 2_000_000 / probes.len() + 1;

    let time = |what: &str, paths: &[Vec<u8>], f: &dyn Fn(&[u8]) -> bool| {
        let t = Instant::now();
        let mut hits = 0usize;
        for _ in 0..rounds {
            for p in paths {
                hits += usize::from(f(black_box(p)));
            }
        }
        let total = rounds * paths.len();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{what}: {total} lookups ({hits} hits) in {secs:.3}s = {:.1} M/s",
            total as f64 / secs / 1e6
        );
    };
    // Baseline: a bare std HashMap lookup of the same keys.
    let bare: std::collections::HashMap<Vec<u8>, u32> =
        probes.iter().cloned().zip(0u32..).collect();
    time("bare HashMap::get (baseline)", &probes, &|p| {
        bare.contains_key(p)
    });
    time("resolve", &probes, &|p| {
        matches!(
            stack.resolve(p),
            Ok(stevedore_core::overlay::Resolution::Found { .. })
        )
    });
    time("lstat", &probes, &|p| stack.lstat(p).is_ok());
    time("stat", &probes, &|p| stack.stat(p).is_ok());
    time("stat via symlinked dir", &through_symlink, &|p| {
        stack.stat(p).is_ok()
    });
}
