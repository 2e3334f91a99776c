//! The raster tiles the image grid embeds in its SVG: PNG-encoded (8-bit grey
//! or RGB) and written as base64 `data:` URLs.

/// Encodes `pixels` (row-major, `channels` bytes per pixel, 1 = grey, 3 = RGB).
///
/// # Shapes
/// `pixels: [height * width * channels]`
pub(crate) fn encode(
    width: u32,
    height: u32,
    channels: u8,
    pixels: &[u8],
) -> Result<Vec<u8>, ::png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut out, width, height);
    encoder.set_color(if channels == 1 {
        ::png::ColorType::Grayscale
    } else {
        ::png::ColorType::Rgb
    });
    encoder.set_depth(::png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

/// Standard base64 with padding (RFC 4648), as `data:` URLs take it.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let img = image::load_from_memory(&encode(w, h, 1, &grey).unwrap())
            .unwrap()
            .to_luma8();
        assert_eq!(img.dimensions(), (w, h));
        assert_eq!(img.into_raw(), grey);

        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7) as u8).collect();
        let img = image::load_from_memory(&encode(w, h, 3, &rgb).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(img.into_raw(), rgb);
    }

    #[test]
    fn wrong_pixel_count_is_an_error() {
        assert!(encode(5, 3, 3, &[0; 44]).is_err());
        assert!(encode(5, 3, 1, &[0; 16]).is_err());
    }
}
