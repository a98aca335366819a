//! Golden layouts of universal prompting (spec §3): every layout of `mmada_models::prompt` on the
//! tiny tokenizer equals the independent Python implementation of
//! `scripts/golden/prompt_golden.py` (ids, prompt mask, key mask), including truncation, the
//! CFG null prompt and the literal `<eot_id>` quirk.

use mmada_models::prompt::{Image, Layout, Prompter, TurnEnd};
use mmada_models::tokenizer::TextTokenizer;
use mmada_models::vocab::UnifiedVocab;
use serde_json::Value;

const GOLDEN: &str = include_str!("golden/prompts.json");

fn check(name: &str, got: &Layout) {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    let case = &golden["cases"][name];
    assert!(case.is_object(), "no golden case {name}");
    let ints = |k: &str| -> Vec<i64> {
        case[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    assert_eq!(got.ids, ints("ids"), "{name}: ids");
    let bools = |v: &[bool]| v.iter().map(|&b| b as i64).collect::<Vec<_>>();
    assert_eq!(
        bools(&got.prompt_mask),
        ints("prompt_mask"),
        "{name}: prompt mask"
    );
    assert_eq!(bools(&got.key_mask), ints("key_mask"), "{name}: key mask");
}

#[test]
fn every_layout_matches_the_golden_file() {
    let tok = TextTokenizer::tiny().unwrap();
    let vocab = UnifiedVocab::tiny(&tok).unwrap();
    let codes = [0i64, 5, 255, 17];
    let p8 = Prompter::new(&tok, &vocab, 8).unwrap();
    let t2i = p8.t2i("a 7", Image::Codes(&codes)).unwrap();
    check("t2i", &t2i);
    assert_eq!(t2i.len(), 8 + 4 + 3, "Lt + N + 3");
    assert_eq!(t2i.image, Some(10..14));
    check(
        "t2i_truncated",
        &p8.t2i("the digit seven", Image::Codes(&codes)).unwrap(),
    );
    check("t2i_null", &p8.t2i_null(Image::Codes(&codes)).unwrap());
    check("t2i_generate", &p8.t2i("a 7", Image::Masked(4)).unwrap());

    let p40 = Prompter::new(&tok, &vocab, 40).unwrap();
    let mmu = p40.mmu(&codes, "What digit is this?", "seven").unwrap();
    check("mmu", &mmu);
    assert_eq!(mmu.len(), 4 + 3 + 40, "N + 3 + Lt");
    let literal = Prompter::new(&tok, &vocab, 40)
        .unwrap()
        .with_turn_end(TurnEnd::Literal);
    check(
        "mmu_literal_eot",
        &literal.mmu(&codes, "What digit is this?", "seven").unwrap(),
    );
    let p20 = Prompter::new(&tok, &vocab, 20).unwrap();
    check(
        "mmu_truncated",
        &p20.mmu(&codes, "What digit is this?", "the digit seven")
            .unwrap(),
    );
    check(
        "mmu_infer",
        &p40.mmu_infer(&codes, &[("user", "What digit is this?")], 6)
            .unwrap(),
    );
    check("lm", &p8.lm("the digit seven", 12).unwrap());
    check("lm_truncated", &p8.lm("the digit seven", 5).unwrap());
    check(
        "chat",
        &p8.chat(&[("user", " What is 2+2? ")], "4", 30).unwrap(),
    );
    check(
        "chat_truncated",
        &p8.chat(&[("user", "What is 2+2?")], "4", 10).unwrap(),
    );
    check(
        "chat_infer",
        &p8.chat_infer(&[("user", "What is 2+2?")], 5).unwrap(),
    );
    let q = Prompter::cot_question("What is 2+2?");
    check(
        "cot_chat",
        &p8.chat(&[("user", &q)], "<think>2+2=4</think> 4", 140)
            .unwrap(),
    );
    let p140 = Prompter::new(&tok, &vocab, 140).unwrap();
    check(
        "r2i",
        &p140.r2i("a 7", "a seven, thin", Image::Masked(4)).unwrap(),
    );
    check(
        "r2i_truncated",
        &p20.r2i("a 7", "a seven, thin", Image::Codes(&codes))
            .unwrap(),
    );
}

#[test]
fn t2i_and_mmu_rows_share_one_length() {
    // Spec §3.6: Lt + N + 3 for both, so they batch together.
    let tok = TextTokenizer::tiny().unwrap();
    let vocab = UnifiedVocab::tiny(&tok).unwrap();
    let p = Prompter::new(&tok, &vocab, 24).unwrap();
    let codes: Vec<i64> = (0..16).map(|i| i * 13 % 256).collect();
    let long = "seven ".repeat(50);
    for caption in ["", "a 7", long.as_str()] {
        let a = p.t2i(caption, Image::Codes(&codes)).unwrap();
        let b = p.mmu(&codes, "What digit?", caption).unwrap();
        assert_eq!((a.len(), b.len()), (24 + 16 + 3, 24 + 16 + 3), "{caption}");
        // The caption never overflows into the image: soi right after the text block.
        assert_eq!(a.ids[25], vocab.ids.soi);
        assert_eq!(a.ids[24], vocab.ids.eos);
    }
}

#[test]
fn bad_codes_and_budgets_are_refused() {
    let tok = TextTokenizer::tiny().unwrap();
    let vocab = UnifiedVocab::tiny(&tok).unwrap();
    let p = Prompter::new(&tok, &vocab, 8).unwrap();
    let e = p.t2i("a 7", Image::Codes(&[3, 256])).unwrap_err();
    assert!(e.to_string().contains("256"), "{e}");
    let e = p.mmu(&[-1], "q", "a").unwrap_err();
    assert!(e.to_string().contains("-1"), "{e}");
    assert!(Prompter::new(&tok, &vocab, 1).is_err());
}
