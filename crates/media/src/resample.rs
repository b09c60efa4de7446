//! Pillow's `Image.resize` on 8-bit RGB images, reproduced operation for operation
//! (libImaging/Resample.c, Pillow 13): one pass per axis whose size changes, each into an 8-bit
//! image, in Pillow's order; coefficients computed in f64, normalised, and
//! rounded to 22-bit fixed point. The reference image processors resize with Pillow, so a model
//! sees the same bytes here as under transformers — any other resampler shifts pixels by a
//! level or two, which a vision tower turns into visibly different logits.

use crate::RgbImage;

/// A Pillow resampling filter. The numbers are Pillow's `Image.Resampling` values, which is how
/// `preprocessor_config.json` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// The filter with Pillow's number `resample` (1 Lanczos, 2 bilinear, 3 bicubic).
    pub fn from_pillow(resample: u64) -> Option<Self> {
        match resample {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's taps: the first input index and the fixed-point weights.
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    /// `ksize` weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input range.
fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero; negatives then clamp to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            row[x] = if w < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        first.push(xmin);
        len.push(n);
    }
    Taps {
        first,
        len,
        weights,
        ksize,
    }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `img` resized to `width` x `height` as Pillow's `Image.resize(size, resample=filter)` does
/// (the whole image as the box, no `reducing_gap`), Pillow 13's pass order included: the
/// vertical pass first when the height shrinks by more than twice as many pixels as the width.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return img.clone();
    }
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;
    let mut data = img.data.clone();
    let (mut w, mut h) = (in_w, in_h);
    for vertical in [vertical_first, !vertical_first] {
        if vertical && out_h != h {
            data = vertical_pass(&data, (w, h), out_h, filter);
            h = out_h;
        } else if !vertical && out_w != w {
            data = horizontal_pass(&data, (w, h), out_w, filter);
            w = out_w;
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// Every row of the `w` x `h` RGB image `src` resampled to `out_w` wide.
fn horizontal_pass(src: &[u8], (w, h): (usize, usize), out_w: usize, filter: Filter) -> Vec<u8> {
    let taps = taps(w, out_w, filter);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; out_w * h * 3];
    for (in_row, out_row) in src.chunks_exact(w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for xx in 0..out_w {
            let k = &taps.weights[xx * taps.ksize..];
            let x0 = taps.first[xx];
            for c in 0..3 {
                let mut ss = half;
                for (x, &wt) in k.iter().enumerate().take(taps.len[xx]) {
                    ss += i64::from(in_row[(x0 + x) * 3 + c]) * i64::from(wt);
                }
                out_row[xx * 3 + c] = clip8(ss);
            }
        }
    }
    out
}

/// Every column of the `w` x `h` RGB image `src` resampled to `out_h` high.
fn vertical_pass(src: &[u8], (w, h): (usize, usize), out_h: usize, filter: Filter) -> Vec<u8> {
    let taps = taps(h, out_h, filter);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; w * out_h * 3];
    for yy in 0..out_h {
        let k = &taps.weights[yy * taps.ksize..];
        let y0 = taps.first[yy];
        for xx in 0..w {
            for c in 0..3 {
                let mut ss = half;
                for (y, &wt) in k.iter().enumerate().take(taps.len[yy]) {
                    ss += i64::from(src[((y0 + y) * w + xx) * 3 + c]) * i64::from(wt);
                }
                out[(yy * w + xx) * 3 + c] = clip8(ss);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_stays_flat_under_every_filter() {
        let img = RgbImage::new(7, 5, [12u8, 200, 99].repeat(35)).expect("image");
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (w, h) in [(3, 2), (14, 11), (7, 9), (20, 5)] {
                let out = resize(&img, w, h, filter);
                assert_eq!(
                    out.data,
                    [12u8, 200, 99].repeat((w * h) as usize),
                    "{filter:?}"
                );
            }
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(300, 96), (20, 96), (70, 64), (5, 3)] {
            let t = taps(i, o, Filter::Lanczos);
            for xx in 0..o {
                let sum: i64 = t.weights[xx * t.ksize..xx * t.ksize + t.len[xx]]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= t.ksize as i64,
                    "{sum}"
                );
            }
        }
    }
}
