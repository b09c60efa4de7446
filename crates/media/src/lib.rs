//! kiln-media: images from bytes to the pixel tiles and prompt text a vision model takes.
//!
//! Three steps, each its own module: [`decode`] (bounded: sizes are checked before any pixel
//! buffer exists; EXIF orientation, alpha on white, 16-bit and palette images as Pillow would
//! give them), [`resample`] (Pillow's resampling, bit for bit, because the reference processors
//! resize with Pillow on 8-bit images), and [`processor`] (Hugging Face's image processors of
//! the families Kiln serves: resizing, tiling, normalising, and the prompt text an image
//! becomes). Nothing here knows HTTP or tensors: bytes come from the gateway, tiles go to the
//! runtime.

pub mod decode;
mod error;
pub mod processor;
pub mod resample;

pub use decode::{DecodeLimits, RgbImage, decode};
pub use error::MediaError;
pub use processor::{Detail, ImageProcessor, ProcessedImage, Tile};
