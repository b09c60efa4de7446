//! The streaming detokenizer: pieces are valid UTF-8 and concatenate to the full decode.

use kiln_tokenizer::Tokenizer;
use proptest::prelude::*;

use crate::common;

fn hf() -> &'static Tokenizer {
    static TOKENIZER: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(common::hf)
}

fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut detok = tok.detokenizer(skip_special);
    let mut pieces: Vec<String> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    pieces.push(detok.flush().unwrap());
    pieces
}

#[test]
fn emoji_spanning_tokens_come_out_whole() {
    let tok = hf();
    let text = "emoji 👩‍👩‍👧‍👦 family, 数学 の テスト, Ελληνικά";
    let ids = tok.encode(text, false, false).unwrap();
    let pieces = stream(tok, &ids, true);
    assert_eq!(pieces.concat(), text);
    // Byte-level tokens split the emoji: some steps must have held text back.
    assert!(pieces.iter().filter(|p| p.is_empty()).count() > 0);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
}

#[test]
fn special_tokens_follow_skip_special() {
    let tok = hf();
    let ids = [1, 4093, 198, 19556, 2];
    assert_eq!(stream(tok, &ids, true).concat(), "user\nHello");
    assert_eq!(
        stream(tok, &ids, false).concat(),
        "<|im_start|>user\nHello<|im_end|>"
    );
}

#[test]
fn an_incomplete_character_at_the_end_is_flushed() {
    let tok = hf();
    // "🚀" is four bytes; feed only the tokens of its first bytes.
    let ids = tok.encode("🚀", false, false).unwrap();
    assert!(ids.len() > 1);
    let partial = &ids[..ids.len() - 1];
    let pieces = stream(tok, partial, false);
    assert!(pieces[..partial.len()].iter().all(String::is_empty));
    assert_eq!(pieces.concat(), tok.decode(partial, false).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pieces_concatenate_to_the_full_decode(
        ids in prop::collection::vec(
            // Mostly ordinary tokens, some specials, and the byte tokens that split characters.
            prop_oneof![0u32..49152, 0u32..17, 128u32..256],
            0..64,
        ),
        skip_special in any::<bool>(),
    ) {
        let tok = hf();
        let pieces = stream(tok, &ids, skip_special);
        prop_assert_eq!(pieces.concat(), tok.decode(&ids, skip_special).unwrap());
    }
}
