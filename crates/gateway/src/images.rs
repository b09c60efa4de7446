//! A chat request's image parts become processed images: every part is fetched ([`crate::fetch`],
//! SSRF-safe) and decoded and processed (`kiln-media`, off the async threads) concurrently, and
//! all of it is cancelled when the request is (dropping the [`JoinSet`] aborts its tasks). A
//! failure is a 400 naming the part (`messages[1].content[0].image_url`) and the reason.

use std::sync::Arc;

use kiln_api_types::{ImageDetail, Part, ValidatedMessage};
use kiln_media::{DecodeLimits, Detail, ImageProcessor, ProcessedImage};
use tokio::task::JoinSet;

use crate::error::{ApiError, ErrorKind};
use crate::fetch::{self, MediaPolicy};

/// How images are fetched and how big they may be (the server's flags).
#[derive(Debug, Clone, Default)]
pub struct MediaConfig {
    pub policy: MediaPolicy,
    pub decode: DecodeLimits,
}

/// A vision model's image side: its processor and the token its image rows replace.
#[derive(Debug, Clone)]
pub struct Vision {
    pub processor: ImageProcessor,
    pub image_token_id: u32,
}

/// Every image part of `messages`, in order, fetched, decoded and processed.
pub(crate) async fn prepare(
    messages: &[ValidatedMessage],
    processor: &ImageProcessor,
    media: &Arc<MediaConfig>,
) -> Result<Vec<ProcessedImage>, ApiError> {
    let mut tasks = JoinSet::new();
    let mut count = 0;
    for (i, message) in messages.iter().enumerate() {
        for (j, part) in message.content.iter().enumerate() {
            let Part::Image(image) = part else { continue };
            let (index, url, media, processor) =
                (count, image.url.clone(), media.clone(), processor.clone());
            let detail = match image.detail {
                ImageDetail::Auto => Detail::Auto,
                ImageDetail::Low => Detail::Low,
                ImageDetail::High => Detail::High,
            };
            let param = format!("messages[{i}].content[{j}].image_url");
            tasks.spawn(async move {
                let result = async {
                    let bytes = fetch::load(&url, &media.policy)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || {
                        let img =
                            kiln_media::decode(&bytes, &media.decode).map_err(|e| e.to_string())?;
                        Ok::<_, String>(processor.process(&img, detail))
                    })
                    .await
                    .map_err(|_| "the image could not be processed".to_string())?
                }
                .await;
                (index, result.map_err(|reason| (param, reason)))
            });
            count += 1;
        }
    }
    let mut out: Vec<Option<ProcessedImage>> = vec![None; count];
    let mut first_error: Option<(usize, (String, String))> = None;
    while let Some(done) = tasks.join_next().await {
        let Ok((index, result)) = done else {
            return Err(ApiError::internal());
        };
        match result {
            Ok(image) => out[index] = Some(image),
            // The earliest failing part is the one reported, whatever finished first.
            Err(e) if first_error.as_ref().is_none_or(|(at, _)| index < *at) => {
                first_error = Some((index, e));
            }
            Err(_) => {}
        }
    }
    if let Some((_, (param, reason))) = first_error {
        return Err(
            ApiError::new(ErrorKind::InvalidImage, format!("{param}: {reason}")).param(param),
        );
    }
    Ok(out.into_iter().flatten().collect())
}

/// Where each image's tokens are in `ids`: the image token's positions, taken in order, each
/// image its own count of them, as runs `(start, len)`. `None` when the counts do not add up.
pub fn spans(
    ids: &[u32],
    image_token: u32,
    images: &[ProcessedImage],
) -> Option<Vec<Vec<(usize, usize)>>> {
    let mut positions = ids
        .iter()
        .enumerate()
        .filter(|&(_, &id)| id == image_token)
        .map(|(p, _)| p);
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for _ in 0..image.image_tokens {
            let p = positions.next()?;
            match runs.last_mut() {
                Some((start, len)) if *start + *len == p => *len += 1,
                _ => runs.push((p, 1)),
            }
        }
        out.push(runs);
    }
    positions.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tokens: usize) -> ProcessedImage {
        ProcessedImage {
            tiles: Vec::new(),
            prompt: String::new(),
            image_tokens: tokens,
            hash: [0; 32],
        }
    }

    #[test]
    fn spans_split_at_other_tokens_and_between_images() {
        let ids = [1, 9, 9, 5, 9, 2, 9, 9, 9];
        let got = spans(&ids, 9, &[image(3), image(3)]).unwrap();
        assert_eq!(got, vec![vec![(1, 2), (4, 1)], vec![(6, 3)]]);
        assert_eq!(spans(&ids, 9, &[image(3)]), None, "image tokens left over");
        assert_eq!(spans(&ids, 9, &[image(4), image(3)]), None, "too few");
    }
}
