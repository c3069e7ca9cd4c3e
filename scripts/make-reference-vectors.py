#!/usr/bin/env python3
"""Writes tests/fixtures/reference_vectors.json: embeddings of a few texts made
by sentence-transformers (the library all-MiniLM-L6-v2 was published for) from
the same weights shoprank loads. shoprank's encoder test compares against them.

Each text is embedded alone (no padding), exactly as sentence-transformers
would serve it; the Rust test also embeds them as one padded batch and checks
both against these vectors.

Rerun (about 3 GB of PyTorch wheels; only needed when the texts change):
    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    scripts/fetch-model
    /tmp/st/bin/python scripts/make-reference-vectors.py
"""
import json
import pathlib

from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
OUT = ROOT / "tests" / "fixtures" / "reference_vectors.json"

TEXTS = [
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "red retrospot lunch bag",
    "a",
    "Looking for a birthday present for my sister who loves gardening; recently viewed: "
    "watering can, herb markers, gardening gloves",
    "Café crème brûlée — naïve résumé? 12% off!!! <b>bold</b> & ünïcödé",
    "花园 灯 装饰",
    # Longer than the 256-token window: checks truncation matches.
    " ".join(["vintage paisley ceramic teapot with matching saucers and spoons"] * 40),
    "SET OF 3 CAKE TINS PANTRY DESIGN, JUMBO BAG RED RETROSPOT, PACK OF 72 RETROSPOT CAKE CASES",
]


def main() -> None:
    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    model.max_seq_length = 256
    rows = []
    for text in TEXTS:
        vector = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
        rows.append({"text": text, "vector": [round(float(x), 9) for x in vector]})
    OUT.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_seq_length": 256,
        "generator": "scripts/make-reference-vectors.py (sentence-transformers, normalize_embeddings=True)",
        "texts": rows,
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} reference vectors to {OUT}")


if __name__ == "__main__":
    main()
