"""A small captioned corpus in Chinese, Japanese, Korean and English with known answers: each
caption names two things in a scene, written as a speaker of that language would (Chinese and
Japanese without spaces, Korean with particles on the nouns). A query is one thing's word; the
captions that name that thing are the answers, by construction, not by string matching."""

from __future__ import annotations

import random
from dataclasses import dataclass

# thing: (English, Chinese, Japanese, Korean)
THINGS = {
    "bicycle": ("bicycle", "自行车", "自転車", "자전거"),
    "boat": ("boat", "船", "ボート", "배"),
    "dog": ("dog", "狗", "犬", "개"),
    "cat": ("cat", "猫", "猫", "고양이"),
    "car": ("car", "汽车", "自動車", "자동차"),
    "tree": ("tree", "树", "木", "나무"),
    "bird": ("bird", "鸟", "鳥", "새"),
    "umbrella": ("umbrella", "雨伞", "傘", "우산"),
    "train": ("train", "火车", "電車", "기차"),
    "flower": ("flower", "花", "花", "꽃"),
    "bench": ("bench", "长椅", "ベンチ", "벤치"),
    "kite": ("kite", "风筝", "凧", "연"),
}
# place: (English, Chinese, Japanese, Korean)
PLACES = [("street", "街道", "通り", "거리"), ("river", "河边", "川辺", "강가"),
          ("park", "公园", "公園", "공원"), ("beach", "海滩", "浜辺", "해변")]
LANGS = ("en", "zh", "ja", "ko")


def _caption(lang: str, place: tuple[str, ...], a: tuple[str, ...], b: tuple[str, ...],
             rng: random.Random) -> str:
    i = LANGS.index(lang)
    p, x, y = place[i], a[i], b[i]
    if lang == "en":
        return rng.choice([f"a {x} and a {y} on the {p}", f"a photo of a {x} next to a {y}",
                           f"the {p} with a {x} and a {y}"])
    if lang == "zh":
        return rng.choice([f"{p}上的{x}和{y}", f"一张{x}和{y}的照片", f"{x}停在{p}旁边的{y}前面"])
    if lang == "ja":
        return rng.choice([f"{p}に{x}と{y}がある", f"{x}と{y}の写真", f"{p}で{y}の隣にある{x}"])
    # Korean: particles attach to nouns (와/과 after a vowel/consonant)
    def with_and(word: str) -> str:
        return word + ("과" if (ord(word[-1]) - 0xAC00) % 28 else "와")
    return rng.choice([f"{p}에 있는 {with_and(x)} {y}", f"{with_and(x)} {y}의 사진",
                       f"{p}에서 {y} 옆에 있는 {x}"])


@dataclass
class Caption:
    text: str
    lang: str
    things: frozenset[str]


def corpus(per_language: int = 60, seed: int = 7) -> list[Caption]:
    rng = random.Random(seed)
    names = sorted(THINGS)
    out = []
    for lang in LANGS:
        for _ in range(per_language):
            a, b = rng.sample(names, 2)
            text = _caption(lang, rng.choice(PLACES), THINGS[a], THINGS[b], rng)
            out.append(Caption(text, lang, frozenset({a, b})))
    return out


def queries() -> list[tuple[str, str, str]]:
    """(query text, language, thing) for every thing in every language."""
    return [(THINGS[t][LANGS.index(lang)], lang, t) for lang in LANGS for t in sorted(THINGS)]
