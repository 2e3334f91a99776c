//! A minimal PNG encoder (8-bit grey or RGB, stored deflate blocks) for the
//! small raster tiles embedded in SVG figures. The tiles are a few kilobytes,
//! so compression is not worth a dependency.

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes `pixels` (row-major, `channels` bytes per pixel, 1 = grey, 3 = RGB).
///
/// # Shapes
/// `pixels: [height * width * channels]`
pub(crate) fn encode(width: u32, height: u32, channels: u8, pixels: &[u8]) -> Vec<u8> {
    debug_assert!(channels == 1 || channels == 3);
    debug_assert_eq!(pixels.len(), (width * height) as usize * channels as usize);
    let row = width as usize * channels as usize;
    // Filter type 0 (none) before every row.
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for r in pixels.chunks(row.max(1)).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if raw.is_empty() {
        vec![&[][..]]
    } else {
        raw.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, if channels == 1 { 0 } else { 2 }, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_reference_values() {
        // zlib.crc32(b"123456789") == 0xCBF43926, zlib.adler32(b"Wikipedia") == 0x11E60398
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn encoded_png_decodes_to_the_same_pixels() {
        let (w, h) = (5u32, 3u32);
        let grey: Vec<u8> = (0..w * h).map(|i| (i * 17) as u8).collect();
        let img = image::load_from_memory(&encode(w, h, 1, &grey))
            .unwrap()
            .to_luma8();
        assert_eq!(img.dimensions(), (w, h));
        assert_eq!(img.into_raw(), grey);

        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7) as u8).collect();
        let img = image::load_from_memory(&encode(w, h, 3, &rgb))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.into_raw(), rgb);

        // More than one stored block.
        let (w, h) = (300u32, 300u32);
        let big: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        let img = image::load_from_memory(&encode(w, h, 1, &big))
            .unwrap()
            .to_luma8();
        assert_eq!(img.into_raw(), big);
    }
}
