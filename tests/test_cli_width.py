"""Chinese, Japanese and Korean text on the command line: the hits table fits the terminal by
display width (wide characters take two columns), JSON keeps characters readable where stdout
can encode them and escapes them where it cannot."""

from __future__ import annotations

import json

import pytest
from conftest import json_lines, run_cli
from hypothesis import given
from hypothesis import strategies as st

from retrieval import Collection
from retrieval.interfaces.cli.output import json_text
from retrieval.interfaces.cli.table import hits_table
from retrieval.interfaces.cli.width import clip, display_width

TEXTS = ["街道上的一只船和自行车", "自行车停在红色的墙边，旁边有一只猫在睡觉" * 3,
         "自転車に乗った人", "자전거를 탄 사람", "a red bicycle", "ＦＵＬＬ－ＷＩＤＴＨ",
         "e\u0301 combining", "🐶 and 🚲"]


def test_display_width() -> None:
    assert display_width("abc") == 3
    assert display_width("自行车") == 6
    assert display_width("자전거") == 6 and display_width("じてんしゃ") == 10
    assert display_width("ＡＢ") == 4  # fullwidth forms
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert display_width("a\u200bb") == 2  # nor does a zero-width space
    assert clip("一只猫在沙发上睡觉", 10) == "一只猫..." and display_width("一只猫...") == 9
    assert clip("short", 10) == "short"


@given(st.text(alphabet=st.sampled_from("ab 猫狗自行车の한국ＡＢ\u0301…"), max_size=40),
       st.integers(min_value=3, max_value=30))
def test_clip_fits_and_keeps_a_prefix(text: str, width: int) -> None:
    out = clip(text, width)
    assert display_width(out) <= width
    assert out == text or (out.endswith("...") and text.startswith(out[:-3]))


@pytest.fixture
def cjk_collection(tmp_path, tiny_spec):
    col = Collection(tmp_path / "c", model=tiny_spec)
    col.add_texts(TEXTS)
    col.close()
    return tmp_path / "c"


def test_hits_table_fits_the_terminal_by_display_width(cjk_collection) -> None:
    """On a terminal (``columns``) every line fits by display width and the result column
    starts at the same display column on every line."""
    with Collection(cjk_collection) as col:
        hits = col.search("自行车", target="texts", hybrid=True, k=8)
    assert len(hits) == 8
    for columns in (40, 80):
        lines = hits_table(hits, columns=columns)
        assert len(lines) == 9
        assert all(display_width(ln) <= columns for ln in lines), [
            (display_width(ln), ln) for ln in lines]
        start = lines[0].index("result")
        assert all(display_width(ln[:ln.index('"') + 1]) == start + 1 for ln in lines[1:])
        if columns == 80:
            # as written, not escaped; the matched word marked as in a pipe
            assert '"街道上的一只船和[自行车]"' in "\n".join(lines)


def test_hits_table_in_a_pipe_is_not_cut(cjk_collection) -> None:
    out = run_cli("search", "自行车", "--target", "texts", "--hybrid", "-k", "8",
                  collection=cjk_collection, env={"COLUMNS": "40"}).stdout
    marked = TEXTS[1].replace("自行车", "[自行车]")
    assert f'"{marked}"' in out  # 126 columns and the marks, whole
    assert max(display_width(ln) for ln in out.splitlines()) > 40


def test_json_keeps_characters_unless_stdout_cannot_encode_them(cjk_collection) -> None:
    out = run_cli("search", "自行车", "--target", "texts", "--hybrid", "--json",
                  collection=cjk_collection).stdout
    assert "街道上的一只船和自行车" in out and "\\u" not in out
    assert {h["text"] for h in json_lines(out)} == set(TEXTS)
    value = {"text": "自行车 🚲", "path": "/照片/a.jpg"}
    assert json_text(value, "utf-8") == json.dumps(value, ensure_ascii=False)
    assert json_text(value, "latin-1") == json.dumps(value)  # \u81ea...
    assert json_text(value, "cp1252") == json.dumps(value)
    # click writes UTF-8 to a stream that says ASCII (a C locale), so nothing is escaped
    assert json_text(value, "ascii") == json.dumps(value, ensure_ascii=False)
    assert json_text({"text": "café"}, "latin-1") == '{"text": "café"}'


@pytest.mark.slow
def test_latin1_stdout_escapes_instead_of_failing(cjk_collection) -> None:
    env = {"PYTHONIOENCODING": "latin-1"}
    out = run_cli("search", "自行车", "--target", "texts", "--hybrid", "--json", "-k", "3",
                  collection=cjk_collection, env=env, process=True).stdout
    assert out.isascii() and "\\u81ea\\u884c\\u8f66" in out  # 自行车, escaped
    assert "自行车" in json_lines(out)[0]["text"]
    table = run_cli("search", "自行车", "--target", "texts", "--hybrid", "-k", "3",
                    collection=cjk_collection, env=env, process=True).stdout
    assert table.isascii() and "\\u81ea\\u884c\\u8f66" in table
