//! Numeric header fields: octal, GNU base-256 and PAX decimal, both ways.

/// Why a numeric field did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not a number at all.
    Syntax,
    /// A number too large for `u64`/`i64`.
    Overflow,
}

/// Parses a numeric header field: GNU base-256 when the first byte has its top bit set,
/// else octal digits, optionally surrounded by spaces and NULs. An empty field is 0.
///
/// Header fields are at most 12 bytes, so the value always fits an `i128`.
pub(crate) fn parse_numeric(field: &[u8]) -> Result<i128, NumError> {
    debug_assert!(field.len() <= 12);
    match field.first() {
        Some(&first) if first & 0x80 != 0 => Ok(parse_base256(field)),
        _ => parse_octal(field),
    }
}

fn parse_octal(field: &[u8]) -> Result<i128, NumError> {
    let mut i = 0;
    while i < field.len() && (field[i] == b' ' || field[i] == 0) {
        i += 1;
    }
    let mut value: i128 = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        value = (value << 3) | i128::from(field[i] - b'0');
        i += 1;
    }
    if field[i..].iter().all(|&b| b == b' ' || b == 0) {
        Ok(value)
    } else {
        Err(NumError::Syntax)
    }
}

/// GNU base-256: the first byte is 0x80 (positive) or 0xff (negative) in practice; its bit 6
/// is the sign, the rest is a big-endian two's complement number (same reading as Go's).
fn parse_base256(field: &[u8]) -> i128 {
    let inv = if field[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: i128 = 0;
    for (i, &byte) in field.iter().enumerate() {
        let mut c = byte ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        x = (x << 8) | i128::from(c);
    }
    if inv == 0xff {
        -x - 1
    } else {
        x
    }
}

/// Parses a PAX decimal: ASCII digits only, at least one.
pub(crate) fn parse_decimal(s: &[u8]) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Syntax);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(NumError::Syntax);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(NumError::Overflow)?;
    }
    Ok(v)
}

/// Parses a PAX time: `-?digits(.digits*)?`; fractional digits past the ninth are dropped (as
/// Go does). Returns normalized `(secs, nanos)`.
pub(crate) fn parse_pax_time(s: &[u8]) -> Result<(i64, u32), NumError> {
    let (negative, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let (whole, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &s[s.len()..]),
    };
    let secs = parse_decimal(whole)?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let digit = match frac.get(i) {
            Some(&b) if b.is_ascii_digit() => u32::from(b - b'0'),
            Some(_) => return Err(NumError::Syntax),
            None => 0,
        };
        nanos = nanos * 10 + digit;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(NumError::Syntax);
    }
    let secs = i64::try_from(secs).map_err(|_| NumError::Overflow)?;
    if negative {
        if nanos == 0 {
            Ok((-secs, 0))
        } else {
            // secs ≤ i64::MAX, so -secs - 1 ≥ i64::MIN.
            Ok((-secs - 1, 1_000_000_000 - nanos))
        }
    } else {
        Ok((secs, nanos))
    }
}

/// Largest value an octal field of `len` bytes holds (`len - 1` digits and a NUL).
pub(crate) fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len - 1) as u32)) - 1
}

/// Writes `value` as `len - 1` zero-padded octal digits and a NUL, as GNU tar does. False if
/// it does not fit.
pub(crate) fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    if value > octal_max(field.len()) {
        return false;
    }
    let mut v = value;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
    true
}

/// GNU's rule: octal when the value is non-negative and fits, else base-256 (first byte 0x80
/// or 0xff, then `len - 1` bytes of two's complement). False if neither fits.
pub(crate) fn put_gnu(field: &mut [u8], value: i128) -> bool {
    if value >= 0 && value <= i128::from(octal_max(field.len())) && put_octal(field, value as u64) {
        return true;
    }
    let bytes = field.len() - 1;
    let magnitude = if value < 0 { -1 - value } else { value };
    if magnitude >> (8 * bytes) != 0 {
        return false;
    }
    field[0] = if value < 0 { 0xff } else { 0x80 };
    let mut v = value;
    for slot in field[1..].iter_mut().rev() {
        *slot = (v & 0xff) as u8;
        v >>= 8;
    }
    true
}

/// Appends the decimal digits of `v`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Number of decimal digits of `v`.
pub(crate) fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// Appends a PAX time the way Go writes it: `secs` alone when there are no nanoseconds,
/// else `secs.fraction` with trailing zeros removed; times before the epoch with a fraction
/// are written as a negative decimal (`-1.5`), not as `secs + fraction`.
pub(crate) fn push_pax_time(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    if nanos == 0 {
        if secs < 0 {
            out.push(b'-');
        }
        push_decimal(out, secs.unsigned_abs());
        return;
    }
    let (negative, whole, frac) = if secs < 0 {
        // secs + nanos/1e9 = -((-secs - 1) + (1e9 - nanos)/1e9)
        (true, (-(secs + 1)) as u64, 1_000_000_000 - nanos)
    } else {
        (false, secs as u64, nanos)
    };
    if negative {
        out.push(b'-');
    }
    push_decimal(out, whole);
    out.push(b'.');
    let mut digits = [0u8; 9];
    let mut f = frac;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut end = 9;
    while end > 1 && digits[end - 1] == b'0' {
        end -= 1;
    }
    out.extend_from_slice(&digits[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_parse_leniently() {
        assert_eq!(parse_numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_numeric(b"   644 \0"), Ok(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Ok(0));
        assert_eq!(parse_numeric(b"        "), Ok(0));
        assert_eq!(parse_numeric(b"00000000017\0"), Ok(0o17));
        assert_eq!(parse_numeric(b"0000648\0"), Err(NumError::Syntax));
        assert_eq!(parse_numeric(b"12 34\0\0\0"), Err(NumError::Syntax));
        assert_eq!(parse_numeric(b"abc\0\0\0\0\0"), Err(NumError::Syntax));
        assert_eq!(parse_numeric(b"77777777777\0"), Ok(0o77777777777));
    }

    #[test]
    fn base256_positive_negative_and_wide() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x01;
        f[10] = 0x02;
        assert_eq!(parse_numeric(&f), Ok(0x0201));
        let neg = [0xffu8; 12];
        assert_eq!(parse_numeric(&neg), Ok(-1));
        let mut f = [0xffu8; 8];
        f[7] = 0xfe;
        assert_eq!(parse_numeric(&f), Ok(-2));
        // 11 payload bytes of 0xff: 2^88 - 1, beyond u64.
        let mut f = [0xffu8; 12];
        f[0] = 0x80;
        assert_eq!(parse_numeric(&f), Ok((1i128 << 88) - 1));
    }

    #[test]
    fn gnu_encoding_round_trips() {
        for v in [
            0i128,
            1,
            0o7777777,
            0o10000000,
            1 << 40,
            -1,
            -1_000_000,
            (1 << 55) - 1,
        ] {
            let mut f = [0u8; 8];
            assert!(put_gnu(&mut f, v), "{v}");
            assert_eq!(parse_numeric(&f), Ok(v));
        }
        let mut f = [0u8; 8];
        assert!(!put_gnu(&mut f, 1 << 56));
        let mut f = [0u8; 12];
        assert!(put_gnu(&mut f, i128::from(u64::MAX)));
        assert_eq!(parse_numeric(&f), Ok(i128::from(u64::MAX)));
        assert!(put_gnu(&mut f, i128::from(i64::MIN)));
        assert_eq!(parse_numeric(&f), Ok(i128::from(i64::MIN)));
        let mut f = [0u8; 8];
        assert!(put_octal(&mut f, 0o644));
        assert_eq!(&f, b"0000644\0");
        assert!(!put_octal(&mut f, 0o10000000));
    }

    #[test]
    fn decimals_and_times() {
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_decimal(b"18446744073709551616"),
            Err(NumError::Overflow)
        );
        assert_eq!(parse_decimal(b""), Err(NumError::Syntax));
        assert_eq!(parse_decimal(b"-1"), Err(NumError::Syntax));
        assert_eq!(parse_decimal(b"1 "), Err(NumError::Syntax));
        assert_eq!(parse_pax_time(b"1"), Ok((1, 0)));
        assert_eq!(parse_pax_time(b"1."), Ok((1, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Ok((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.1234567899"), Ok((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Ok((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-0.25"), Ok((-1, 750_000_000)));
        assert_eq!(parse_pax_time(b"-7"), Ok((-7, 0)));
        assert_eq!(parse_pax_time(b"1.2x"), Err(NumError::Syntax));
        assert_eq!(parse_pax_time(b"1.1234567890x"), Err(NumError::Syntax));
        assert_eq!(parse_pax_time(b"."), Err(NumError::Syntax));
        assert_eq!(
            parse_pax_time(b"9223372036854775808"),
            Err(NumError::Overflow)
        );
        for (secs, nanos, text) in [
            (0i64, 0u32, "0"),
            (5, 0, "5"),
            (-5, 0, "-5"),
            (1, 500_000_000, "1.5"),
            (-2, 500_000_000, "-1.5"),
            (1_700_000_000, 123_456_789, "1700000000.123456789"),
            (-1, 1, "-0.999999999"),
        ] {
            let mut out = Vec::new();
            push_pax_time(&mut out, secs, nanos);
            assert_eq!(out, text.as_bytes());
            assert_eq!(parse_pax_time(text.as_bytes()), Ok((secs, nanos)));
        }
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(9), 1);
        assert_eq!(decimal_len(10), 2);
        assert_eq!(decimal_len(u64::MAX), 20);
    }
}
