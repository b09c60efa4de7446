//! The one error type of kiln-media: why an image could not be read or processed.

/// What went wrong with one image. The `Display` text is the reason a client reads in its 400.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the data is not an image in a format this server reads (PNG, JPEG, WebP or GIF)")]
    NotAnImage,
    #[error("the image is {found}, a format this server does not read (PNG, JPEG, WebP or GIF)")]
    UnsupportedFormat { found: String },
    #[error(
        "the image is {width}x{height} pixels, over this server's limit of {max_side} pixels a side \
         and {max_pixels} pixels in all"
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error(
        "the image is over this server's limits of {max_side} pixels a side and {max_pixels} \
         pixels in all"
    )]
    OverLimits { max_side: u32, max_pixels: u64 },
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image processor configuration is not usable: {0}")]
    Config(String),
}
