//! CRC-64/GO-ISO (Go's `hash/crc64` with the ISO table): the check value against a bitwise
//! reference, and the table and carry-less-multiply paths against each other and the reference.

use stevedore_core::crc64::{self, Crc64Iso};

/// Go's `crc64.ISO`: x^64 + x^4 + x^3 + x + 1, reversed.
const ISO: u64 = 0xD800_0000_0000_0000;

/// One bit at a time, as the CRC definition reads: raw register in, raw register out.
fn bitwise_register(mut r: u64, data: &[u8]) -> u64 {
    for &b in data {
        r ^= b as u64;
        for _ in 0..8 {
            r = if r & 1 == 1 { (r >> 1) ^ ISO } else { r >> 1 };
        }
    }
    r
}

/// Go's `crc64.Checksum(data, crc64.MakeTable(crc64.ISO))`, bitwise.
fn bitwise_checksum(data: &[u8]) -> u64 {
    !bitwise_register(!0, data)
}

/// xorshift64*: deterministic bytes without a rand crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

fn clmul_register(state: u64, data: &[u8]) -> Option<u64> {
    crc64::update_clmul(state, data)
}

#[test]
fn crc64_check_value() {
    assert_eq!(bitwise_checksum(b"123456789"), 0xB909_56C7_75A4_1001);
    assert_eq!(crc64::checksum(b"123456789"), 0xB909_56C7_75A4_1001);
    let mut c = Crc64Iso::new();
    c.update(b"123456789");
    assert_eq!(c.finish(), 0xB909_56C7_75A4_1001);
    assert_eq!(
        c.to_be_bytes(),
        [0xB9, 0x09, 0x56, 0xC7, 0x75, 0xA4, 0x10, 0x01]
    );
    assert_eq!(
        !crc64::update_table(!0, b"123456789"),
        0xB909_56C7_75A4_1001
    );
    assert_eq!(Crc64Iso::default().finish(), 0);
    assert_eq!(crc64::checksum(b""), 0);
    assert_eq!(bitwise_checksum(b"a"), crc64::checksum(b"a"));
}

#[test]
fn crc64_clmul_reports_availability() {
    let got = clmul_register(!0, b"123456789");
    if cfg!(target_arch = "x86_64") && got.is_none() {
        eprintln!("crc64: this CPU lacks PCLMULQDQ/SSE4.1, the folding path is not tested");
    }
    if let Some(r) = got {
        assert_eq!(!r, 0xB909_56C7_75A4_1001);
    }
}

/// Every length 0..=1100 at a random start offset (unaligned heads), from a random register,
/// fed in one call and in random splits: table, folding and bitwise agree.
#[test]
fn crc64_paths_agree_for_every_length() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let buf = rng.bytes(1100 + 64);
    for len in 0..=1100usize {
        let off = rng.below(64);
        let data = &buf[off..off + len];
        let start = if len % 3 == 0 { !0 } else { rng.next() };
        let want = bitwise_register(start, data);
        assert_eq!(
            crc64::update_table(start, data),
            want,
            "table, len {len} off {off}"
        );
        if let Some(got) = clmul_register(start, data) {
            assert_eq!(got, want, "clmul, len {len} off {off}");
        }
        let mut c = Crc64Iso::new();
        c.update(data);
        assert_eq!(
            c.finish(),
            !bitwise_register(!0, data),
            "Crc64Iso, len {len}"
        );

        // Random split points, each piece through the public type and each path.
        let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        let mut pieces = Crc64Iso::new();
        let mut table = start;
        let mut clmul = Some(start);
        for w in cuts.windows(2) {
            let piece = &data[w[0]..w[1]];
            pieces.update(piece);
            table = crc64::update_table(table, piece);
            clmul = clmul.and_then(|r| clmul_register(r, piece));
        }
        assert_eq!(pieces.finish(), c.finish(), "split {cuts:?}");
        assert_eq!(table, want, "table split {cuts:?}");
        if let Some(got) = clmul {
            assert_eq!(got, want, "clmul split {cuts:?}");
        }
    }
}

/// A few multi-MiB buffers (odd lengths, odd offsets): folding = table, bitwise on one of them.
#[test]
fn crc64_paths_agree_on_large_buffers() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let buf = rng.bytes((5 << 20) + 64);
    for (i, &(off, len)) in [
        (0, 1 << 20),
        (3, (2 << 20) + 77),
        (17, 5 << 20),
        (63, (3 << 20) - 5),
    ]
    .iter()
    .enumerate()
    {
        let data = &buf[off..off + len];
        let table = crc64::update_table(!0, data);
        if let Some(got) = clmul_register(!0, data) {
            assert_eq!(got, table, "clmul vs table, off {off} len {len}");
        }
        assert_eq!(crc64::checksum(data), !table);
        if i == 1 {
            assert_eq!(
                table,
                bitwise_register(!0, data),
                "table vs bitwise, len {len}"
            );
        }
    }
}

/// `update` in arbitrary pieces (1 byte .. 300 KiB, crossing every threshold) equals one call.
#[test]
fn crc64_update_in_pieces_equals_one_call() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let data = rng.bytes(3 << 20);
    let whole = crc64::checksum(&data);
    for round in 0..6 {
        let mut c = Crc64Iso::new();
        let mut at = 0;
        while at < data.len() {
            let max = match round % 3 {
                0 => 20,
                1 => 600,
                _ => 300 << 10,
            };
            let n = (1 + rng.below(max)).min(data.len() - at);
            c.update(&data[at..at + n]);
            at += n;
        }
        assert_eq!(c.finish(), whole, "round {round}");
        let cloned = c.clone();
        assert_eq!(cloned.to_be_bytes(), whole.to_be_bytes());
    }
}

/// Prints throughput per path; run with `--release -- --ignored --nocapture`.
#[test]
#[ignore]
fn crc64_throughput() {
    use std::time::Instant;
    let mut rng = Rng(42);
    let data = rng.bytes(64 << 20);
    let gbps = |f: &dyn Fn(&[u8]) -> u64, chunk: usize| {
        let mut best = f64::INFINITY;
        let mut sink = 0u64;
        for _ in 0..5 {
            let t = Instant::now();
            for c in data.chunks(chunk) {
                sink ^= f(c);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        std::hint::black_box(sink);
        data.len() as f64 / best / 1e9
    };
    let table = |d: &[u8]| crc64::update_table(!0, d);
    let bitwise = |d: &[u8]| bitwise_register(!0, d);
    let public = |d: &[u8]| crc64::checksum(d);
    let clmul = |d: &[u8]| clmul_register(!0, d).unwrap_or(0);
    let has_clmul = clmul_register(0, b"x").is_some();
    for &chunk in &[
        64usize << 20,
        1 << 20,
        64 << 10,
        4096,
        512,
        128,
        64,
        48,
        32,
        24,
        16,
    ] {
        let clmul_gbps = if has_clmul {
            format!("{:7.2}", gbps(&clmul, chunk))
        } else {
            "  n/a".into()
        };
        println!(
            "crc64 chunk {chunk:>9} B: table {:6.2} GB/s, clmul {clmul_gbps} GB/s, Crc64Iso {:6.2} GB/s",
            gbps(&table, chunk),
            gbps(&public, chunk),
        );
    }
    let small = &data[..8 << 20];
    let t = Instant::now();
    std::hint::black_box(bitwise(small));
    println!(
        "crc64 bitwise reference: {:.3} GB/s",
        small.len() as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}
