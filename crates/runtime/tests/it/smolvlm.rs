//! The tiny random SmolVLM / Idefics3 checkpoint (`testdata/tiny-smolvlm`, made with
//! transformers 5.24; see its `make_golden.py`) through the real path: PNG → `kiln-media`'s
//! decoder and Idefics3 processor (pixel values against transformers' Pillow processor) → the
//! chat template with the images expanded (ids exact) → the vision tower and connector (image
//! rows) → the Llama text model with the rows spliced in (logits at every position, prefilled
//! in chunks that cut through the images, and 8 greedy steps over the paged KV cache).

use kiln_media::{DecodeLimits, Detail, ImageProcessor, ProcessedImage};
use kiln_runtime::{Embeds, KvCacheSize, LoadOptions, Model, SeqInput};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Content, ContentPart, Tokenizer};
use serde_json::Value;

use crate::common::{
    device, f32s, ids, image_runs, max_diff, messages, prefill_and_greedy, testdata, vision_model,
};

fn dir() -> std::path::PathBuf {
    testdata("tiny-smolvlm")
}

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("golden.json")).unwrap()).unwrap()
}

fn floats(file: &str) -> Vec<f32> {
    f32s(&std::fs::read(dir().join(file)).unwrap())
}

/// The file named at the start of a golden `..._file` description (`x.f32: (…) …`).
fn file_of(description: &Value) -> String {
    description
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string()
}

fn processed(case: &Value, processor: &ImageProcessor) -> Vec<ProcessedImage> {
    let detail = if case["processor_kwargs"]["do_image_splitting"] == Value::Bool(false) {
        Detail::Low
    } else {
        Detail::Auto
    };
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let bytes = std::fs::read(dir().join(image["file"].as_str().unwrap())).unwrap();
            let img = kiln_media::decode(&bytes, &DecodeLimits::default()).unwrap();
            processor.process(&img, detail)
        })
        .collect()
}

#[test]
fn the_processor_makes_transformers_pixels_and_prompt_text() {
    let processor = ImageProcessor::from_dir(&dir()).unwrap().unwrap();
    let tokenizer = Tokenizer::from_hf_dir(dir()).unwrap();
    let golden = golden();
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let images = processed(case, &processor);
        for (image, expected) in images.iter().zip(case["images"].as_array().unwrap()) {
            assert_eq!(
                image.tiles.len() as u64,
                expected["tiles"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(
                image.prompt,
                expected["expansion"].as_str().unwrap(),
                "{name}"
            );
            let pixels: Vec<f32> = image.tiles.iter().flat_map(|t| t.pixels.clone()).collect();
            let want = floats(&file_of(&expected["pixel_values_file"]));
            let diff = max_diff(&pixels, &want);
            assert!(diff <= 1e-5, "{name}: pixel values differ by {diff}");
        }
        let expansions: Vec<String> = images.iter().map(|i| i.prompt.clone()).collect();
        let options = ChatTemplateOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let prompt = tokenizer
            .apply_chat_template_with_images(&messages(case), &options, "<image>", &expansions)
            .unwrap();
        assert_eq!(prompt.ids, ids(&case["input_ids"]), "{name}: input ids");
    }
}

#[test]
fn the_mmproj_and_gguf_give_the_same_processor_and_ids() {
    let mmproj = kiln_gguf::GgufFile::open(dir().join("mmproj.gguf")).unwrap();
    let from_gguf = ImageProcessor::from_mmproj(mmproj.metadata()).unwrap();
    assert_eq!(
        from_gguf,
        ImageProcessor::from_dir(&dir()).unwrap().unwrap()
    );
    let tokenizer = Tokenizer::from_gguf_path(dir().join("model.gguf")).unwrap();
    let golden = golden();
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    for case in golden["cases"].as_array().unwrap() {
        let expansions: Vec<String> = processed(case, &from_gguf)
            .into_iter()
            .map(|i| i.prompt)
            .collect();
        let prompt = tokenizer
            .apply_chat_template_with_images(&messages(case), &options, "<image>", &expansions)
            .unwrap();
        assert_eq!(prompt.ids, ids(&case["input_ids"]), "{}", case["name"]);
    }
}

#[test]
fn a_template_that_drops_an_image_is_refused() {
    let tokenizer = Tokenizer::from_hf_dir(dir()).unwrap();
    let msg = ChatMessage {
        role: "user".into(),
        content: Some(Content::Parts(vec![ContentPart::Text {
            // Typed by the user: text, not a placeholder.
            text: "look: <image>".into(),
        }])),
        extra: serde_json::Map::new(),
    };
    let err = tokenizer
        .apply_chat_template_with_images(
            &[msg],
            &ChatTemplateOptions::default(),
            "<image>",
            &["x".into()],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("placed 0 image placeholder"),
        "{err}"
    );
}

#[test]
fn logits_and_greedy_ids_match_transformers_from_safetensors() {
    logits_and_greedy_ids(&dir(), None);
}

#[test]
fn logits_and_greedy_ids_match_transformers_from_gguf_and_mmproj() {
    logits_and_greedy_ids(&dir().join("model.gguf"), Some(dir().join("mmproj.gguf")));
}

/// Every case through the model at `path` (with its `mmproj`): image rows against transformers'
/// connector output, logits at every position prefilled in chunks of 24 (which cut through the
/// images), then 8 greedy ids from the paged KV cache.
fn logits_and_greedy_ids(path: &std::path::Path, mmproj: Option<std::path::PathBuf>) {
    let mut model = vision_model(path, mmproj);
    let token = model.vision().unwrap().image_token_id;
    assert_eq!(token, 510);
    let processor = ImageProcessor::from_dir(&dir()).unwrap().unwrap();
    let golden = golden();
    let mut worst = 0.0f32;
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["input_ids"]);
        let images = processed(case, &processor);
        let rows: Vec<Vec<f32>> = images
            .iter()
            .map(|i| model.encode_image(&i.tiles).unwrap())
            .collect();
        for (r, expected) in rows.iter().zip(case["images"].as_array().unwrap()) {
            let want = floats(&file_of(&expected["features_file"]));
            let diff = max_diff(r, &want);
            assert!(diff <= 1e-4, "{name}: image features differ by {diff}");
        }
        let counts: Vec<usize> = images.iter().map(|i| i.image_tokens).collect();
        let runs = image_runs(&prompt, token, &counts);
        let (logits, got) = prefill_and_greedy(&mut model, &prompt, (&rows, &runs), 24, 8);
        let want = floats(&file_of(&case["logits_file"]));
        let diff = max_diff(&logits, &want);
        worst = worst.max(diff);
        assert!(diff <= 1e-3, "{name}: logits differ by {diff}");
        assert_eq!(got, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
    eprintln!(
        "tiny SmolVLM ({}): largest logit difference {worst:e}",
        path.display()
    );
}

#[test]
fn rows_that_do_not_fit_their_tokens_are_refused() {
    let mut model = Model::load(
        &dir(),
        &LoadOptions {
            device: device(),
            kv_cache: KvCacheSize::Tokens(64),
            ..Default::default()
        },
    )
    .unwrap();
    let hidden = model.config().hidden_size;
    let rows = vec![0.0f32; 3 * hidden];
    let table: Vec<u32> = (0..4).collect();
    let err = model
        .forward(&[SeqInput {
            tokens: &[1, 510, 510],
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[Embeds { at: 1, rows: &rows }],
        }])
        .unwrap_err();
    assert!(err.to_string().contains("image rows"), "{err}");
    // Tiles that do not make whole patches are refused.
    let bad = model.encode_image(&[kiln_media::Tile {
        width: 12,
        height: 12,
        pixels: vec![0.0; 3 * 12 * 12],
    }]);
    let err = bad.unwrap_err().to_string();
    assert!(err.contains("12-pixel tiles"), "{err}");
}
