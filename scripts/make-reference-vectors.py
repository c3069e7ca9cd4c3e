#!/usr/bin/env python3
"""Writes tests/fixtures/reference-vectors/<MODEL>.json: embeddings of a fixed
set of texts made by sentence-transformers from the same weights shoprank
loads (models/<MODEL>/). shoprank's encoder tests compare against them within
1e-5, one text at a time and all in one batch.

The texts cover what a storefront sends: English and Chinese product titles,
short queries, mixed Chinese-English titles with brands and model numbers,
full-width punctuation, emoji, and user texts longer than the window (checks
that truncation matches). Each text is embedded alone (no padding), as
sentence-transformers serves it: the Transformer module then mean pooling over
the attention mask, then L2 normalisation (normalize_embeddings=True). Where a
model ships no modules.json (m3e-small), sentence-transformers builds exactly
that pipeline itself (mean pooling), which is how m3e-small's card uses it.

The committed fixtures were made with sentence-transformers 6.2.0 on torch
2.15 (the `pooling` field reads `Pooling.get_config_dict()`, which older
releases may lack); all-MiniLM-L6-v2's vectors agree with those of the
release that made the first fixture to 1.5e-7.

Usage (about 3 GB of PyTorch wheels; only needed when the texts change):
    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    scripts/fetch-model all
    /tmp/st/bin/python scripts/make-reference-vectors.py [all-MiniLM-L6-v2|m3e-small ...]
"""
import json
import pathlib
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "reference-vectors"

# The window each model runs with in shoprank (encoder.max_seq_len of its preset).
WINDOWS = {"all-MiniLM-L6-v2": 256, "m3e-small": 256}
HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2", "m3e-small": "moka-ai/m3e-small"}

TEXTS = [
    # English titles and queries (Online Retail style, then mixed case).
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
    # Chinese titles and queries (the README's handbag example among them).
    "红色手提包",
    "红色真皮手提包 女",
    "男士运动鞋",
    "女士钱包 真皮",
    "2024新款夏季碎花连衣裙女 收腰显瘦中长款 雪纺裙子",
    "繁體中文：真皮男士皮帶 自動扣 商務休閒",
    # Mixed Chinese and English, brands, model numbers, full-width forms, emoji.
    "Apple iPhone 15 Pro Max 手机壳 透明防摔 MagSafe磁吸",
    "LEGO乐高 积木 10698 经典创意大号积木盒 6岁+",
    "【限时特惠】小米 Redmi Buds 4 蓝牙耳机 ￥199 包邮！👍",
    "ＡＢＣ全角字母 １２３ 全角数字",
    # A user text as shoprank composes it: query, then recent titles.
    "红色手提包, 女士钱包 真皮, 红色真皮手提包 女, 真皮斜挎包 小方包, 夏季新款女包",
    # Chinese user text longer than the window: each character is a token.
    "最近浏览：" + "，".join(["北欧风陶瓷茶壶套装带托盘和茶杯", "手工编织藤编收纳篮", "纯棉四件套床上用品"] * 12),
]


def main(models) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in models:
        model = SentenceTransformer(str(ROOT / "models" / name), device="cpu")
        model.max_seq_length = WINDOWS[name]
        rows = []
        for text in TEXTS:
            vector = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
            rows.append({"text": text, "vector": [round(float(x), 9) for x in vector]})
        out = OUT_DIR / f"{name}.json"
        out.write_text(json.dumps({
            "model": HUB_IDS[name],
            "max_seq_length": WINDOWS[name],
            "modules": [type(module).__name__ for module in model],
            "pooling": model[1].get_config_dict()["pooling_mode"],
            "generator": "scripts/make-reference-vectors.py (sentence-transformers "
                         f"{sentence_transformers.__version__}, normalize_embeddings=True)",
            "texts": rows,
        }, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} reference vectors to {out}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(WINDOWS))
