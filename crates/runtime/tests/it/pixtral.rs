//! The tiny random Pixtral checkpoint (`testdata/tiny-pixtral`: LLaVA with a Pixtral vision
//! tower and a Mistral text model, made with transformers 5.24; see its `make_golden.py`)
//! through the real path, from safetensors and from llama.cpp's GGUF + `mmproj` pair: PNG →
//! `kiln-media`'s Pixtral processor (pixel values against transformers' Pillow processor; a
//! tall image takes Pillow 13's vertical-first pass) → the chat template with `[IMG]` rows and
//! `[IMG_BREAK]`/`[IMG_END]` (ids exact) → the tower (2D RoPE) and projector → the text model
//! (logits at every position, prefilled in chunks that cut through the images, and 8 greedy
//! steps over the paged KV cache).

use kiln_media::{DecodeLimits, Detail, ImageProcessor, ProcessedImage};
use kiln_tokenizer::{ChatTemplateOptions, Tokenizer};
use serde_json::Value;

use crate::common::{
    f32s, ids, image_runs, max_diff, messages, prefill_and_greedy, testdata, vision_model,
};

fn dir() -> std::path::PathBuf {
    testdata("tiny-pixtral")
}

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("golden.json")).unwrap()).unwrap()
}

fn floats(file: &str) -> Vec<f32> {
    f32s(&std::fs::read(dir().join(file)).unwrap())
}

fn cases(golden: &Value) -> Vec<(&String, &Value)> {
    golden["cases"].as_object().unwrap().iter().collect()
}

fn processed(case: &Value, processor: &ImageProcessor) -> Vec<ProcessedImage> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let bytes = std::fs::read(dir().join(image["file"].as_str().unwrap())).unwrap();
            let img = kiln_media::decode(&bytes, &DecodeLimits::default()).unwrap();
            processor.process(&img, Detail::Auto)
        })
        .collect()
}

#[test]
fn the_processor_makes_transformers_pixels_and_ids() {
    let processor = ImageProcessor::from_dir(&dir()).unwrap().unwrap();
    let mmproj = kiln_gguf::GgufFile::open(dir().join("mmproj.gguf")).unwrap();
    assert_eq!(
        ImageProcessor::from_mmproj(mmproj.metadata()).unwrap(),
        processor
    );
    let golden = golden();
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    for tokenizer in [
        Tokenizer::from_hf_dir(dir()).unwrap(),
        Tokenizer::from_gguf_path(dir().join("model.gguf")).unwrap(),
    ] {
        for (name, case) in cases(&golden) {
            let images = processed(case, &processor);
            for (image, expected) in images.iter().zip(case["images"].as_array().unwrap()) {
                assert_eq!(image.tiles.len(), 1);
                let tile = &image.tiles[0];
                let size = [u64::from(tile.height), u64::from(tile.width)];
                assert_eq!(
                    size[..],
                    expected["image_size"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect::<Vec<_>>()[..],
                    "{name}"
                );
                let want = floats(expected["pixel_values_file"].as_str().unwrap());
                let diff = max_diff(&tile.pixels, &want);
                assert!(diff <= 1e-5, "{name}: pixel values differ by {diff}");
            }
            let expansions: Vec<String> = images.iter().map(|i| i.prompt.clone()).collect();
            let prompt = tokenizer
                .apply_chat_template_with_images(&messages(case), &options, "[IMG]", &expansions)
                .unwrap();
            assert_eq!(prompt.ids, ids(&case["input_ids"]), "{name}: input ids");
        }
    }
}

#[test]
fn logits_and_greedy_ids_match_transformers_from_safetensors() {
    logits_and_greedy_ids(&dir(), None);
}

#[test]
fn logits_and_greedy_ids_match_transformers_from_gguf_and_mmproj() {
    logits_and_greedy_ids(&dir().join("model.gguf"), Some(dir().join("mmproj.gguf")));
}

fn logits_and_greedy_ids(path: &std::path::Path, mmproj: Option<std::path::PathBuf>) {
    let mut model = vision_model(path, mmproj);
    let token = model.vision().unwrap().image_token_id;
    assert_eq!(token, 10);
    let processor = ImageProcessor::from_dir(&dir()).unwrap().unwrap();
    let golden = golden();
    let mut worst = 0.0f32;
    for (name, case) in cases(&golden) {
        let prompt = ids(&case["input_ids"]);
        let images = processed(case, &processor);
        let rows: Vec<Vec<f32>> = images
            .iter()
            .map(|i| model.encode_image(&i.tiles).unwrap())
            .collect();
        for (r, expected) in rows.iter().zip(case["images"].as_array().unwrap()) {
            let want = floats(expected["features_file"].as_str().unwrap());
            let diff = max_diff(r, &want);
            assert!(diff <= 1e-4, "{name}: image features differ by {diff}");
        }
        let counts: Vec<usize> = images.iter().map(|i| i.image_tokens).collect();
        let runs = image_runs(&prompt, token, &counts);
        let (logits, got) = prefill_and_greedy(&mut model, &prompt, (&rows, &runs), 20, 8);
        let want = floats(case["logits_file"].as_str().unwrap());
        let diff = max_diff(&logits, &want);
        worst = worst.max(diff);
        assert!(diff <= 1e-3, "{name}: logits differ by {diff}");
        assert_eq!(got, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
    eprintln!(
        "tiny Pixtral ({}): largest logit difference {worst:e}",
        path.display()
    );
}
