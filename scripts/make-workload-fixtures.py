#!/usr/bin/env python3
"""Writes the small workload fixtures of tests/fixtures/workloads/ (nothing downloaded): a
byte-level BPE tokenizer.json (tests/fixtures/tokenizers/tiny-bpe), a ShareGPT-format sample, a chat JSONL file, a Mooncake-format trace and the same arrivals as CSV.
Deterministic: the same files every time. Run from the repository root."""

import json
import random
from pathlib import Path

OUT = Path("tests/fixtures/workloads")
WORDS = ("time river memory signal garden theory engine winter language number city light "
         "question pattern ocean history machine forest music silence bridge orbit harvest "
         "mirror water house paper world stone green story table north south field market "
         "money night morning letter school window family animal power voice").split()
TOPICS = ["tides", "compilers", "bread", "volcanoes", "chess openings", "jazz harmony",
          "glaciers", "prime numbers", "bees", "lighthouses", "rust lifetimes", "sourdough"]


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def sharegpt(rng):
    records = []
    for i, topic in enumerate(TOPICS):
        turns = []
        if i % 4 == 0:
            turns.append({"from": "system", "value": "You are a concise assistant."})
        for t in range(1 + i % 3):
            q = f"Question {t + 1} about {topic}: " + sentence(rng, 6 + rng.randrange(20))
            a = " ".join(sentence(rng, 8) for _ in range(1 + rng.randrange(6)))
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"id": f"sample-{i:03}", "conversations": turns})
    return records


def bytes_to_unicode():
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tiny_tokenizer():
    """A byte-level BPE tokenizer.json (the format of GPT-2's, SmolLM2's, Llama 3's) whose merges
    make each word of WORDS one token, with a space before it ("Ġword") and without: every
    byte is in the vocabulary, so any text encodes. The space-led merges rank first, so no merge
    of a bare word applies inside one."""
    alphabet = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab.setdefault(alphabet[b], len(vocab))
    merges = []
    for lead in ("Ġ", ""):
        for w in sorted(set(WORDS)):
            chars = list(lead + w) if lead else list(w)
            cur = chars[0]
            for c in chars[1:]:
                pair = [cur, c]
                if pair not in merges:
                    merges.append(pair)
                cur += c
                vocab.setdefault(cur, len(vocab))
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def main():
    rng = random.Random(17)
    tok = Path("tests/fixtures/tokenizers/tiny-bpe")
    tok.mkdir(parents=True, exist_ok=True)
    (tok / "tokenizer.json").write_text(json.dumps(tiny_tokenizer(), ensure_ascii=False) + "\n")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sharegpt-sample.json").write_text(json.dumps(sharegpt(rng), indent=1) + "\n")
    with open(OUT / "chat.jsonl", "w") as f:
        for topic in TOPICS[:6]:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Answer in one paragraph."},
                {"role": "user", "content": f"Explain {topic} to a child."}],
                "output_len": 8 + rng.randrange(24)}) + "\n")
    # Mooncake trace: timestamp (ms from the start), input/output lengths, 512-token prefix blocks.
    rows, t = [], 0
    for i in range(40):
        t += rng.randrange(10, 90)
        inp = 128 + rng.randrange(900)
        blocks = (inp + 511) // 512
        shared = [0, 1][: min(blocks, 1 + i % 2)] if i % 3 else []
        hash_ids = shared + [100 + i * 4 + b for b in range(blocks - len(shared))]
        rows.append({"timestamp": t, "input_length": inp, "output_length": 4 + rng.randrange(28),
                     "hash_ids": hash_ids})
    with open(OUT / "mooncake-trace.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(OUT / "trace.csv", "w") as f:
        f.write("timestamp,input_tokens,output_tokens\n")
        for r in rows:
            f.write(f"{r['timestamp']},{r['input_length']},{r['output_length']}\n")


if __name__ == "__main__":
    main()
