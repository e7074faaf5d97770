"""The shipped restorers load offline and beat the degraded input on unseen photos."""

from __future__ import annotations

import pytest

from udc_edge.models.zoo import load_model, shipped_card, shipped_models
from udc_edge.training.card import heldout_pairs
from udc_edge.training.restorer import evaluate_pairs


@pytest.mark.parametrize("name,display", [("unet-s-poled", "poled"), ("unet-s-toled", "toled")])
def test_shipped_restorer_gains_on_held_out_photos(name, display):
    assert name in shipped_models()
    model, desc = load_model(name)
    assert desc["source"] == "shipped" and desc["arch"] == "unet"
    # A small fixed set with a seed the card did not use.
    m = evaluate_pairs(model, heldout_pairs(display, count=4, size=96, seed=31337))
    assert m["psnr"] > m["input_psnr"] + 4.0
    assert m["ssim"] > m["input_ssim"]


def test_cards_record_the_command_and_the_held_out_gain():
    card = shipped_card("unet-s-poled")
    assert card["command"].startswith("udc-edge") and card["steps"] > 0 and card["wall_seconds"] > 0
    ho = card["heldout"]
    assert ho["source"] == "photos:test" and ho["psnr"] - ho["input_psnr"] >= 6.0
