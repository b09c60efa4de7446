//! The image processors of the vision families Kiln serves, as transformers' slow (Pillow)
//! processors compute them: an image becomes normalised pixel tiles for the vision tower and the
//! text its placeholder becomes in the prompt. Configured from a model folder's
//! `preprocessor_config.json` (and `processor_config.json`).

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::resample::{Filter, resize};
use crate::{MediaError, RgbImage};

/// `image_url.detail`. Idefics3 has a meaning for it: `low` sends the global image only (no
/// tiles). Pixtral's processor has none: it is accepted and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    #[default]
    Auto,
    Low,
    High,
}

/// One image the vision tower takes: channel-major `[3, height, width]` f32.
#[derive(Clone, PartialEq)]
pub struct Tile {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<f32>,
}

impl std::fmt::Debug for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tile({}x{})", self.width, self.height)
    }
}

/// An image, processed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// What the vision tower encodes, in order (Idefics3: the tiles row by row, then the
    /// global image; Pixtral: the one resized image).
    pub tiles: Vec<Tile>,
    /// The text that replaces the image's placeholder in the rendered prompt.
    pub prompt: String,
    /// How many image tokens `prompt` holds: the rows of embeddings the model puts there.
    pub image_tokens: usize,
    /// A hash of the pixels and of how they were processed: two images share KV cache blocks
    /// only when this is equal.
    pub hash: [u8; 32],
}

/// A vision family's processor.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageProcessor {
    Idefics3(Idefics3),
    Pixtral(Pixtral),
}

/// Rescaling and normalisation, as transformers does them: `u8 as f64 * factor`, rounded to
/// f32, then `(x - mean) / std` in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub rescale: Option<f64>,
    pub mean_std: Option<([f32; 3], [f32; 3])>,
}

impl Normalize {
    fn tile(&self, img: &RgbImage) -> Tile {
        let plane = img.width as usize * img.height as usize;
        let mut pixels = vec![0f32; plane * 3];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut v = match self.rescale {
                    Some(f) => (f64::from(px[c]) * f) as f32,
                    None => f32::from(px[c]),
                };
                if let Some((mean, std)) = &self.mean_std {
                    v = (v - mean[c]) / std[c];
                }
                pixels[c * plane + i] = v;
            }
        }
        Tile {
            width: img.width,
            height: img.height,
            pixels,
        }
    }
}

/// Idefics3 / SmolVLM (`Idefics3ImageProcessor` + `Idefics3Processor`).
#[derive(Debug, Clone, PartialEq)]
pub struct Idefics3 {
    /// `size.longest_edge`: the longest side is scaled to this (up or down) first.
    pub longest_edge: Option<u32>,
    /// `max_image_size.longest_edge`: the vision tower's square tile.
    pub tile: u32,
    pub filter: Filter,
    pub normalize: Normalize,
    pub split: bool,
    /// Image tokens per tile (`image_seq_len`).
    pub tokens_per_tile: usize,
}

/// Pixtral (`PixtralImageProcessor` + `PixtralProcessor`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pixtral {
    pub longest_edge: u32,
    pub patch: u32,
    pub filter: Filter,
    pub normalize: Normalize,
}

/// transformers' `MAX_IMAGE_SIZE` in Idefics3's processor: no side above this, ever.
const IDEFICS3_MAX_SIDE: u32 = 4096;

impl ImageProcessor {
    /// The processor a model folder describes, or `None` when it has no
    /// `preprocessor_config.json` (a text model).
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, MediaError> {
        let read = |name: &str| -> Result<Option<Value>, MediaError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(t) => serde_json::from_str(&t)
                    .map(Some)
                    .map_err(|e| MediaError::Config(format!("{}: {e}", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(MediaError::Config(format!("{}: {e}", path.display()))),
            }
        };
        let processor = read("processor_config.json")?.unwrap_or(Value::Null);
        // Hub folders have `preprocessor_config.json`; transformers 5 writes the image
        // processor's settings inside `processor_config.json` instead.
        let pre = match read("preprocessor_config.json")? {
            Some(pre) => pre,
            None => match processor.get("image_processor") {
                Some(pre) => pre.clone(),
                None => return Ok(None),
            },
        };
        Self::from_configs(&pre, &processor).map(Some)
    }

    /// The processor an `mmproj` GGUF implies (llama.cpp's converter writes the tower's sizes
    /// and the normalisation, not the processor): Idefics3's tile is the tower's image size and
    /// its longest edge `clip.vision.preproc_image_size`; Pixtral's longest edge is the tower's
    /// image size (Pixtral-12B's processor and tower agree on 1024). Resampling, rescaling and
    /// splitting are the families' defaults.
    pub fn from_mmproj(meta: &kiln_gguf::Metadata) -> Result<Self, MediaError> {
        let bad = |e: kiln_gguf::GgufError| MediaError::Config(format!("mmproj: {e}"));
        let projector = meta.get_str("clip.projector_type").map_err(bad)?;
        let num = |key: &str| -> Result<u32, MediaError> {
            let v = meta.get_u64(&format!("clip.vision.{key}")).map_err(bad)?;
            u32::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| MediaError::Config(format!("mmproj: clip.vision.{key} is {v}")))
        };
        let three = |key: &str| -> Result<[f32; 3], MediaError> {
            let v = meta
                .get_f32_array(&format!("clip.vision.{key}"))
                .map_err(bad)?;
            <[f32; 3]>::try_from(v.as_slice()).map_err(|_| {
                MediaError::Config(format!("mmproj: clip.vision.{key} is not 3 values"))
            })
        };
        let normalize = Normalize {
            rescale: Some(1.0 / 255.0),
            mean_std: Some((three("image_mean")?, three("image_std")?)),
        };
        let (image, patch) = (num("image_size")?, num("patch_size")?);
        match projector {
            "idefics3" => {
                let scale = meta
                    .opt_u64("clip.vision.projector.scale_factor")
                    .map_err(bad)?
                    .unwrap_or(2) as u32;
                let side = image / patch;
                if scale == 0 || side % scale != 0 {
                    return Err(MediaError::Config(format!(
                        "mmproj: a {side}-patch tile does not shuffle by {scale}"
                    )));
                }
                Ok(Self::Idefics3(Idefics3 {
                    longest_edge: Some(num("preproc_image_size")?),
                    tile: image,
                    filter: Filter::Lanczos,
                    normalize,
                    split: true,
                    tokens_per_tile: ((side / scale) * (side / scale)) as usize,
                }))
            }
            "pixtral" => Ok(Self::Pixtral(Pixtral {
                longest_edge: image,
                patch,
                filter: Filter::Bicubic,
                normalize,
            })),
            other => Err(MediaError::Config(format!(
                "mmproj: projector `{other}` is not one Kiln implements (idefics3, pixtral)"
            ))),
        }
    }

    /// The processor from `preprocessor_config.json` and `processor_config.json` (or Null).
    pub fn from_configs(pre: &Value, processor: &Value) -> Result<Self, MediaError> {
        let kind = pre["image_processor_type"].as_str().unwrap_or_default();
        let normalize = normalize(pre)?;
        let filter = |default: Filter| -> Result<Filter, MediaError> {
            match pre.get("resample").and_then(Value::as_u64) {
                None => Ok(default),
                Some(n) => Filter::from_pillow(n).ok_or_else(|| {
                    MediaError::Config(format!(
                        "resample {n} is not a filter Kiln reproduces (1 Lanczos, 2 bilinear, \
                         3 bicubic)"
                    ))
                }),
            }
        };
        match kind.trim_end_matches("Fast") {
            "Idefics3ImageProcessor" | "SmolVLMImageProcessor" => {
                let tile = edge(&pre["max_image_size"]).ok_or_else(|| {
                    MediaError::Config("max_image_size.longest_edge is missing".into())
                })?;
                let longest_edge = if pre["do_resize"].as_bool().unwrap_or(true) {
                    edge(&pre["size"])
                } else {
                    None
                };
                let tokens_per_tile = processor["image_seq_len"]
                    .as_u64()
                    .or_else(|| pre["image_seq_len"].as_u64())
                    .ok_or_else(|| {
                        MediaError::Config(
                            "image_seq_len is missing (processor_config.json)".into(),
                        )
                    })? as usize;
                Ok(Self::Idefics3(Idefics3 {
                    longest_edge,
                    tile,
                    filter: filter(Filter::Lanczos)?,
                    normalize,
                    split: pre["do_image_splitting"].as_bool().unwrap_or(true),
                    tokens_per_tile,
                }))
            }
            "PixtralImageProcessor" => {
                let longest_edge = edge(&pre["size"])
                    .ok_or_else(|| MediaError::Config("size.longest_edge is missing".into()))?;
                let patch = match &pre["patch_size"] {
                    Value::Number(n) => n.as_u64(),
                    v => v["height"]
                        .as_u64()
                        .filter(|&h| Some(h) == v["width"].as_u64()),
                }
                .filter(|&p| p > 0)
                .ok_or_else(|| MediaError::Config("patch_size is missing or not square".into()))?
                    as u32;
                Ok(Self::Pixtral(Pixtral {
                    longest_edge,
                    patch,
                    filter: filter(Filter::Bicubic)?,
                    normalize,
                }))
            }
            other => Err(MediaError::Config(format!(
                "image_processor_type `{other}` is not one Kiln implements (Idefics3ImageProcessor, \
                 PixtralImageProcessor)"
            ))),
        }
    }

    /// What the chat template writes for an image part (and the image token's text).
    pub fn placeholder(&self) -> &'static str {
        match self {
            Self::Idefics3(_) => "<image>",
            Self::Pixtral(_) => "[IMG]",
        }
    }

    /// The image, processed.
    pub fn process(&self, img: &RgbImage, detail: Detail) -> ProcessedImage {
        let (tiles, prompt, image_tokens) = match self {
            Self::Idefics3(p) => p.process(img, detail),
            Self::Pixtral(p) => p.process(img),
        };
        let mut h = Sha256::new();
        h.update(format!("{self:?}|{detail:?}|{}x{}|", img.width, img.height));
        h.update(&img.data);
        ProcessedImage {
            tiles,
            prompt,
            image_tokens,
            hash: h.finalize().into(),
        }
    }
}

fn edge(v: &Value) -> Option<u32> {
    v["longest_edge"]
        .as_u64()
        .map(|e| e as u32)
        .filter(|&e| e > 0)
}

fn normalize(pre: &Value) -> Result<Normalize, MediaError> {
    let rescale = if pre["do_rescale"].as_bool().unwrap_or(true) {
        Some(pre["rescale_factor"].as_f64().unwrap_or(1.0 / 255.0))
    } else {
        None
    };
    let three = |key: &str| -> Result<[f32; 3], MediaError> {
        let v = pre[key]
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| MediaError::Config(format!("{key} must be three numbers")))?;
        let mut out = [0f32; 3];
        for (o, x) in out.iter_mut().zip(v) {
            *o = x
                .as_f64()
                .ok_or_else(|| MediaError::Config(format!("{key} must be three numbers")))?
                as f32;
        }
        Ok(out)
    };
    let mean_std = if pre["do_normalize"].as_bool().unwrap_or(true) {
        Some((three("image_mean")?, three("image_std")?))
    } else {
        None
    };
    Ok(Normalize { rescale, mean_std })
}

impl Idefics3 {
    fn process(&self, img: &RgbImage, detail: Detail) -> (Vec<crate::Tile>, String, usize) {
        let mut img = img.clone();
        if let Some(longest) = self.longest_edge {
            let (h, w) = rescale_to_max_len(img.height, img.width, longest);
            let (h, w) = scale_below_upper_bound(h, w, IDEFICS3_MAX_SIDE);
            img = resize(&img, w, h, self.filter);
        }
        let split = self.split && detail != Detail::Low;
        let mut frames = Vec::new();
        let (mut rows, mut cols) = (0, 0);
        if split {
            // resize_for_vision_encoder: both sides up to multiples of the tile.
            let (h, w) = (img.height, img.width);
            let t = self.tile;
            let aspect = f64::from(w) / f64::from(h);
            let (h, w) = if w >= h {
                let w = w.div_ceil(t) * t;
                let h = ((f64::from(w) / aspect) as u32).div_ceil(t) * t;
                (h, w)
            } else {
                let h = h.div_ceil(t) * t;
                let w = ((f64::from(h) * aspect) as u32).div_ceil(t) * t;
                (h, w)
            };
            img = resize(&img, w.max(t), h.max(t), self.filter);
            if img.height > t || img.width > t {
                rows = img.height.div_ceil(t);
                cols = img.width.div_ceil(t);
                let th = img.height.div_ceil(rows);
                let tw = img.width.div_ceil(cols);
                for r in 0..rows {
                    for c in 0..cols {
                        let (x, y) = (c * tw, r * th);
                        let (x1, y1) = ((x + tw).min(img.width), (y + th).min(img.height));
                        frames.push(img.crop(x, y, x1 - x, y1 - y));
                    }
                }
            }
        }
        if img.width != self.tile || img.height != self.tile {
            img = resize(&img, self.tile, self.tile, self.filter);
        }
        frames.push(img);
        let tiles: Vec<Tile> = frames.iter().map(|f| self.normalize.tile(f)).collect();

        let image = "<image>".repeat(self.tokens_per_tile);
        let fake = "<fake_token_around_image>";
        let mut prompt = String::new();
        for r in 1..=rows {
            for c in 1..=cols {
                prompt.push_str(&format!("{fake}<row_{r}_col_{c}>{image}"));
            }
            prompt.push('\n');
        }
        if rows > 0 {
            prompt.push('\n');
        }
        prompt.push_str(&format!("{fake}<global-img>{image}{fake}"));
        let n = tiles.len() * self.tokens_per_tile;
        (tiles, prompt, n)
    }
}

/// Idefics3's `_resize_output_size_rescale_to_max_len`: the longest side becomes `max_len` (up
/// or down), the other follows the aspect ratio truncated, then made even.
fn rescale_to_max_len(height: u32, width: u32, max_len: u32) -> (u32, u32) {
    let aspect = f64::from(width) / f64::from(height);
    let even = |v: u32| if v.is_multiple_of(2) { v } else { v + 1 };
    let (h, w) = if width >= height {
        (even((f64::from(max_len) / aspect) as u32), max_len)
    } else {
        (max_len, even((f64::from(max_len) * aspect) as u32))
    };
    (h.max(1), w.max(1))
}

/// Idefics3's `_resize_output_size_scale_below_upper_bound`.
fn scale_below_upper_bound(height: u32, width: u32, max_len: u32) -> (u32, u32) {
    let aspect = f64::from(width) / f64::from(height);
    let (mut h, mut w) = (height, width);
    if width >= height && width > max_len {
        w = max_len;
        h = (f64::from(w) / aspect) as u32;
    } else if height > width && height > max_len {
        h = max_len;
        w = (f64::from(h) * aspect) as u32;
    }
    (h.max(1), w.max(1))
}

impl Pixtral {
    fn process(&self, img: &RgbImage) -> (Vec<Tile>, String, usize) {
        let (mut h, mut w) = (img.height, img.width);
        let ratio = (f64::from(h) / f64::from(self.longest_edge))
            .max(f64::from(w) / f64::from(self.longest_edge));
        if ratio > 1.0 {
            h = (f64::from(h) / ratio).floor() as u32;
            w = (f64::from(w) / ratio).floor() as u32;
        }
        let rows = h.max(1).div_ceil(self.patch);
        let cols = w.max(1).div_ceil(self.patch);
        let resized = resize(img, cols * self.patch, rows * self.patch, self.filter);
        let tiles = vec![self.normalize.tile(&resized)];
        let mut prompt = String::new();
        for r in 0..rows {
            prompt.push_str(&"[IMG]".repeat(cols as usize));
            prompt.push_str(if r + 1 == rows {
                "[IMG_END]"
            } else {
                "[IMG_BREAK]"
            });
        }
        (tiles, prompt, (rows * cols) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idefics3() -> ImageProcessor {
        ImageProcessor::from_configs(
            &json!({
                "image_processor_type": "Idefics3ImageProcessor",
                "size": {"longest_edge": 96}, "max_image_size": {"longest_edge": 32},
                "resample": 1, "rescale_factor": 1.0 / 255.0, "do_image_splitting": true,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            }),
            &json!({"image_seq_len": 4}),
        )
        .expect("config")
    }

    #[test]
    fn idefics3_tiles_a_wide_image_and_adds_the_global_one() {
        let img = RgbImage::new(300, 200, vec![128; 300 * 200 * 3]).expect("image");
        let p = idefics3().process(&img, Detail::Auto);
        // 300x200 → 96x64 → 96x64 in 32-tiles: 2 rows of 3, plus the global image.
        assert_eq!(p.tiles.len(), 7);
        assert_eq!(p.image_tokens, 28);
        assert_eq!(p.prompt.matches("<image>").count(), 28);
        assert!(
            p.prompt
                .starts_with("<fake_token_around_image><row_1_col_1><image>")
        );
        assert!(p.prompt.contains("<row_2_col_3>"));
        assert!(p.prompt.ends_with("\n\n<fake_token_around_image><global-img><image><image><image><image><fake_token_around_image>"));
        let low = idefics3().process(&img, Detail::Low);
        assert_eq!((low.tiles.len(), low.image_tokens), (1, 4));
        assert_ne!(low.hash, p.hash, "the detail is part of the hash");
    }

    #[test]
    fn pixtral_rows_end_in_breaks_and_the_last_in_an_end() {
        let p = ImageProcessor::from_configs(
            &json!({
                "image_processor_type": "PixtralImageProcessor",
                "size": {"longest_edge": 64}, "patch_size": {"height": 8, "width": 8},
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }),
            &Value::Null,
        )
        .expect("config");
        let img = RgbImage::new(70, 40, vec![9; 70 * 40 * 3]).expect("image");
        let out = p.process(&img, Detail::Auto);
        // 70x40 → 64x36 → 8x5 patches.
        assert_eq!(out.image_tokens, 40);
        assert_eq!((out.tiles[0].width, out.tiles[0].height), (64, 40));
        assert_eq!(out.prompt.matches("[IMG_BREAK]").count(), 4);
        assert!(out.prompt.ends_with("[IMG][IMG_END]"));
    }

    #[test]
    fn unknown_processors_and_filters_are_config_errors() {
        let e = ImageProcessor::from_configs(
            &json!({"image_processor_type": "CLIPImageProcessor"}),
            &Value::Null,
        );
        assert!(matches!(e, Err(MediaError::Config(_))));
        let e = ImageProcessor::from_configs(
            &json!({"image_processor_type": "PixtralImageProcessor", "size": {"longest_edge": 64},
                    "patch_size": 8, "resample": 4, "image_mean": [0,0,0], "image_std": [1,1,1]}),
            &Value::Null,
        );
        assert!(matches!(e, Err(MediaError::Config(_))));
    }
}
