"""The original description's token table, reproduced by the planning functions (no video):
three episodes tokenized with the 8x16x16 continuous tokenizer."""

from fractions import Fraction

import pytest

from avtokens.planning import plan_tokens

# episode: (length in seconds, fps, width, height) -> (latent frames, grid, audio block,
# visual tokens, audio tokens), as the original description states them.
SEED_TABLE = {  # Sunny: It's Always Sunny in Philadelphia
    "Tom and Jerry": ((8 * 60 + 51, 25, 960, 720), (1750, (60, 45), 27, 4_725_000, 425_250)),
    "Sunny": ((22 * 60 + 18, 30, 640, 480), (5285, (40, 30), 22, 6_342_000, 1_046_430)),
    "The Price is Right": ((38 * 60 + 1, 30, 1280, 720), (9010, (80, 45), 22, 32_436_000, 1_783_980)),
}  # fmt: skip


@pytest.mark.parametrize("episode", SEED_TABLE)
def test_121_frame_windows_reproduce_the_original_token_table(episode):
    (seconds, fps, width, height), (latents, grid, block, visual, audio) = SEED_TABLE[episode]
    plan = plan_tokens(seconds * fps, Fraction(fps), width, height, 8, 16, window=121)
    assert abs(plan.latent_frames - latents) / latents < 0.01
    assert (plan.latent_width, plan.latent_height) == grid
    assert latents * grid[0] * grid[1] == visual  # the table's visual tokens: latent frames x grid
    assert abs(plan.visual_tokens - visual) / visual < 0.01
    assert plan.audio_block == block
    # The table counts audio as that block for every latent frame; the stored stream holds
    # each code frame once (the first latent frame of a window carries one frame's audio).
    assert latents * block * 9 == audio  # DAC: 9 codebooks
    assert abs(plan.audio_tokens - audio) / audio < 0.04


@pytest.mark.parametrize("episode", SEED_TABLE)
def test_17_frame_windows_make_about_a_third_more_latent_frames(episode):
    (seconds, fps, width, height), (latents, *_) = SEED_TABLE[episode]
    short = plan_tokens(seconds * fps, Fraction(fps), width, height, 8, 16, window=17)
    assert 1.30 < short.latent_frames / latents < 1.40


def test_the_readme_table_is_what_the_planning_functions_give():
    from avtokens.workflow import REPO

    text = (REPO / "README.md").read_text()
    episodes = {"Tom and Jerry": "Tom and Jerry", "It's Always Sunny in Philadelphia": "Sunny",
                "The Price is Right": "The Price is Right"}  # fmt: skip
    checked = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) != 6 or cells[0] not in episodes:
            continue
        (seconds, fps, width, height), _ = SEED_TABLE[episodes[cells[0]]]
        plan = plan_tokens(seconds * fps, Fraction(fps), width, height, 8, 16, window=int(cells[1]))
        assert cells[2:] == [f"{plan.latent_frames:,}", f"{plan.visual_tokens:,}", f"{plan.audio_tokens:,}",
                             f"{plan.tokens_per_second:,.0f}"]  # fmt: skip
        checked += 1
    assert checked == 12  # three episodes x four windows
