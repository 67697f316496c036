"""Shakespeare corpus: parsing, the by-play split, determinism, token blocks."""

import pytest
import torch

from ran.injection.models import byte_tokenizer
from ran.tasks import data


def test_splits_are_disjoint_by_play_and_cover_every_play():
    splits = {s: set(data.split_plays(s)) for s in data.SPLITS}
    assert not splits["train"] & splits["val"]
    assert not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    assert set().union(*splits.values()) == set(data.play_files())
    assert splits["val"] == set(data.VAL_PLAYS) and splits["test"] == set(data.TEST_PLAYS)
    assert len(data.play_files()) >= 30


def test_text_is_deterministic_and_markup_free():
    data.shakespeare_text.cache_clear()
    a = data.shakespeare_text("val")
    data.shakespeare_text.cache_clear()
    assert data.shakespeare_text("val") == a
    for bad in ("**", "#", "\\[", "_Enter", "*Exit"):
        assert bad not in a
    assert "BRUTUS:\n" in a  # julius-caesar is a validation play


def test_lines_do_not_cross_splits():
    train = set(data.shakespeare_lines("train"))
    test = data.shakespeare_lines("test")
    assert "Who's there?" in test  # Hamlet's first line
    # Lines can repeat across plays ("My lord?"), but long lines essentially never do.
    long_test = [ln for ln in test if len(ln) > 60]
    assert sum(ln in train for ln in long_test) / len(long_test) < 0.01


def test_parse_play_drops_headers_and_directions():
    md = "# T\n\n## ACT I\n\n_Enter A_\n\n**A**  \nHello, there.  \n_\\[Aside]_ Quiet!\n\n*Exit.*\n"
    assert data.parse_play(md) == [("A", ["Hello, there.", "Quiet!"])]


def test_token_blocks_shape_and_content():
    tok = byte_tokenizer()
    blocks = data.token_blocks(tok, "test", 64, n_blocks=3)
    assert blocks.shape == (3, 64) and blocks.dtype == torch.long
    assert tok.decode(blocks[0]).startswith(data.shakespeare_text("test")[:40])
    assert torch.equal(data.token_blocks(tok, "test", 64, n_blocks=300)[:3], blocks)
    with pytest.raises(ValueError, match="block_len"):
        data.token_blocks(tok, "test", 1)


def test_bad_split_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown split"):
        data.shakespeare_text("dev")
