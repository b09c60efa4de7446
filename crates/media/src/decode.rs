//! Bytes to an 8-bit RGB image, bounded: the format is sniffed from the bytes (never taken from
//! a header or a file name), the size is checked from the file's header before any pixel buffer
//! is allocated, and the result is what Pillow's `Image.open(...)` followed by transformers'
//! `convert_to_rgb` gives — the reference processors start from that.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::MediaError;

/// How big an image may be. A decompression bomb (a tiny file that claims a huge canvas) is
/// refused from its header: the limits are checked before decoding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The longest side, in pixels.
    pub max_side: u32,
    /// Width times height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 16384 a side and 40 megapixels: more than any camera's photo, and Pillow's own bomb
    /// warning starts at 89 megapixels.
    fn default() -> Self {
        Self {
            max_side: 16_384,
            max_pixels: 40_000_000,
        }
    }
}

/// An 8-bit RGB image, row-major, three bytes a pixel.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    /// An image from its pixels; `data` must hold `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, MediaError> {
        if data.len() as u64 != u64::from(width) * u64::from(height) * 3
            || width == 0
            || height == 0
        {
            return Err(MediaError::Decode(format!(
                "{} bytes are not a {width}x{height} RGB image",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// The pixels of the rectangle at (`x`, `y`) of `width` x `height`, which must lie inside.
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> RgbImage {
        let row = self.width as usize * 3;
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for r in y..y + height {
            let start = r as usize * row + x as usize * 3;
            data.extend_from_slice(&self.data[start..start + width as usize * 3]);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }
}

/// Decodes PNG, JPEG, WebP or GIF (its first frame) bytes into RGB, within `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, MediaError> {
    let format = image::guess_format(bytes).map_err(|_| MediaError::NotAnImage)?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif
    ) {
        return Err(MediaError::UnsupportedFormat {
            found: format.to_mime_type().to_string(),
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The sides and pixels are checked below from the header, naming the image's size; the
    // decoders' own allocation cap stays as a backstop (RGBA at 16 bits a channel is the widest
    // buffer a decoder makes; more than that for an image within the pixel limit is no image).
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(decoder_limits);
    let too_large = |width: u32, height: u32| MediaError::TooLarge {
        width,
        height,
        max_side: limits.max_side,
        max_pixels: limits.max_pixels,
    };
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(too_large(width, height));
    }
    if width == 0 || height == 0 {
        return Err(MediaError::Decode("the image has no pixels".into()));
    }
    // A broken EXIF block is no reason to refuse the pixels: upright is Pillow's reading too.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, limits))?;
    img.apply_orientation(orientation);
    Ok(to_rgb(img))
}

fn decode_error(e: image::ImageError, limits: &DecodeLimits) -> MediaError {
    match e {
        image::ImageError::Limits(_) => MediaError::OverLimits {
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        },
        other => MediaError::Decode(other.to_string()),
    }
}

/// transformers' `convert_to_rgb`: RGB as is; anything with alpha composited over white with
/// Pillow's `alpha_composite` arithmetic; grey replicated. Deeper images are first reduced to
/// 8 bits.
fn to_rgb(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let data = if img.color().has_alpha() {
        let rgba = img.into_rgba8();
        let mut out = Vec::with_capacity(width as usize * height as usize * 3);
        for px in rgba.as_raw().chunks_exact(4) {
            out.extend_from_slice(&over_white([px[0], px[1], px[2], px[3]]));
        }
        out
    } else {
        img.into_rgb8().into_raw()
    };
    RgbImage {
        width,
        height,
        data,
    }
}

/// Pillow's `Image.alpha_composite` (libImaging/AlphaComposite.c) of `src` over an opaque
/// white pixel. Over an opaque background its fixed-point arithmetic (7 fraction bits,
/// division by 255 as shifts) is exactly `x / 255` rounded half up with `x = c·a + 255·(255 −
/// a)` (checked against Pillow for all 65536 pairs when the fixtures were made; ties cannot
/// happen, 255 being odd).
fn over_white(src: [u8; 4]) -> [u8; 3] {
    let a = u32::from(src[3]);
    let channel = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
    [channel(src[0]), channel(src[1]), channel(src[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::write_buffer_with_format(
            &mut Cursor::new(&mut out),
            data,
            width,
            height,
            color,
            ImageFormat::Png,
        )
        .expect("encode");
        out
    }

    #[test]
    fn opaque_and_transparent_pixels_composite_as_pillow_does() {
        assert_eq!(over_white([10, 20, 30, 255]), [10, 20, 30]);
        assert_eq!(over_white([10, 20, 30, 0]), [255, 255, 255]);
        // Half alpha lands halfway to white.
        let [r, _, _] = over_white([0, 0, 0, 128]);
        assert!((126..=128).contains(&r), "{r}");
    }

    #[test]
    fn grey_and_alpha_images_become_rgb() {
        let grey = png(2, 1, image::ColorType::L8, &[0, 200]);
        let img = decode(&grey, &DecodeLimits::default()).expect("decode");
        assert_eq!(img.data, vec![0, 0, 0, 200, 200, 200]);
        let rgba = png(1, 1, image::ColorType::Rgba8, &[10, 20, 30, 0]);
        let img = decode(&rgba, &DecodeLimits::default()).expect("decode");
        assert_eq!(img.data, vec![255, 255, 255]);
        let deep = png(1, 1, image::ColorType::Rgb16, &[0xff, 0xff, 0, 0, 0x80, 0]);
        let img = decode(&deep, &DecodeLimits::default()).expect("decode");
        assert_eq!((img.width, img.height, img.data.len()), (1, 1, 3));
        assert_eq!(img.data[0], 255);
        assert_eq!(img.data[1], 0);
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        // A 20000x20000 canvas in a small file: refused before a 1.6 GB buffer exists.
        let limits = DecodeLimits {
            max_side: 30_000,
            max_pixels: 40_000_000,
        };
        let big = png_header_only(20_000, 20_000);
        match decode(&big, &limits) {
            Err(MediaError::TooLarge { width, height, .. }) => {
                assert_eq!((width, height), (20_000, 20_000));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let small = DecodeLimits {
            max_side: 10_000,
            max_pixels: 40_000_000,
        };
        let err = decode(&big, &small).expect_err("over the side limit");
        assert!(matches!(err, MediaError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("20000x20000"), "{err}");
    }

    /// A PNG whose IHDR claims `width` x `height` and whose data is one empty IDAT: what a bomb
    /// looks like to the header check.
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn an_animated_gif_gives_its_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame, RgbaImage};
        let mut out = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut out);
            for color in [[200u8, 0, 0, 255], [0, 0, 200, 255]] {
                let frame = RgbaImage::from_pixel(3, 2, image::Rgba(color));
                enc.encode_frame(Frame::from_parts(
                    frame,
                    0,
                    0,
                    Delay::from_numer_denom_ms(10, 1),
                ))
                .expect("frame");
            }
        }
        let img = decode(&out, &DecodeLimits::default()).expect("decode");
        assert_eq!((img.width, img.height), (3, 2));
        assert!(
            img.data[0] > 150 && img.data[2] < 50,
            "{:?}",
            &img.data[..3]
        );
    }

    #[test]
    fn a_jpeg_decodes_and_its_exif_orientation_turns_it() {
        // A 4x2 JPEG (landscape) with an EXIF block saying "rotate 90° clockwise" (6): upright
        // it is 2x4.
        let rgb = image::RgbImage::from_pixel(4, 2, image::Rgb([10, 120, 240]));
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(rgb)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .expect("encode");
        let plain = decode(&jpeg, &DecodeLimits::default()).expect("decode");
        assert_eq!((plain.width, plain.height), (4, 2));
        // APP1 "Exif\0\0", a little-endian TIFF header and one IFD entry: Orientation = 6.
        let mut app1 = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        app1.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut turned = jpeg[..2].to_vec();
        turned.extend_from_slice(&[0xff, 0xe1]);
        turned.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        turned.extend_from_slice(&app1);
        turned.extend_from_slice(&jpeg[2..]);
        let img = decode(&turned, &DecodeLimits::default()).expect("decode");
        assert_eq!((img.width, img.height), (2, 4));
    }

    #[test]
    fn a_cmyk_jpeg_becomes_rgb() {
        // testdata/media/cmyk_8x8.jpg: red in CMYK, as Pillow writes it (Pillow reads it back
        // as (255, 0, 0)).
        let bytes = include_bytes!("../../../testdata/media/cmyk_8x8.jpg");
        let img = decode(bytes, &DecodeLimits::default()).expect("decode");
        assert_eq!((img.width, img.height), (8, 8));
        let [r, g, b] = [img.data[0], img.data[1], img.data[2]];
        assert!(r > 230 && g < 30 && b < 30, "({r}, {g}, {b})");
    }

    #[test]
    fn other_bytes_are_not_images() {
        assert!(matches!(
            decode(b"hello, not an image", &DecodeLimits::default()),
            Err(MediaError::NotAnImage)
        ));
        let bmp = b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00";
        assert!(matches!(
            decode(bmp, &DecodeLimits::default()),
            Err(MediaError::UnsupportedFormat { .. })
        ));
        // A truncated PNG is a decode error, not a panic.
        let mut cut = png(4, 4, image::ColorType::Rgb8, &[7; 48]);
        cut.truncate(cut.len() - 20);
        assert!(decode(&cut, &DecodeLimits::default()).is_err());
    }
}
