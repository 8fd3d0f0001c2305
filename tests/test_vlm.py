"""Tiny random-weight VLMs of the real architectures, through the same code path as hub models."""

import numpy as np
import pytest
from PIL import Image

from groundrec.offline.ground import GroundImages
from groundrec.offline.dev.tiny_models import ARCHITECTURES
from groundrec.offline.vlm import HFVLM, VLMUnavailable, model_fingerprint, resolve_vlm
from groundrec.offline.config import PromptConfig
from groundrec.offline.vlm import HFVLMConfig


def _images():
    # Different sizes and aspect ratios: Qwen2-VL then needs different numbers of image
    # tokens per image, so batching pads and left padding is actually exercised.
    return [Image.new("RGB", (224, 336), (200, 30, 40)), Image.new("RGB", (112, 56), (30, 70, 200)),
            Image.radial_gradient("L").convert("RGB").resize((90, 150)), Image.new("RGB", (64, 64), (20, 160, 60))]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_equals_unbatched_and_only_new_tokens(tiny_vlm, arch):
    vlm = HFVLM(HFVLMConfig(model=str(tiny_vlm(arch)), max_new_tokens=8))
    prompt = PromptConfig()
    imgs = _images()
    batched = vlm.generate_batch(imgs, prompt)
    one_by_one = [vlm.generate_batch([im], prompt)[0] for im in imgs]
    assert batched == one_by_one
    assert any(a.strip() for a in batched), "the model generated nothing: the test would prove little"
    for answer in batched:
        # Decoding the prompt too would bring back its words (and the chat role names).
        assert "Describe this product" not in answer and "a product photo of" not in answer
        assert "assistant" not in answer and "user" not in answer


def test_qwen2_vl_batch_really_pads(tiny_vlm):
    vlm = HFVLM(HFVLMConfig(model=str(tiny_vlm("qwen2_vl")), max_new_tokens=4))
    inputs, _ = vlm._inputs(_images(), PromptConfig())
    mask = inputs["attention_mask"].numpy()
    assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()  # left padded


def test_ground_mapper_records_bad_images_and_parses(tiny_vlm, small_catalog):
    root = small_catalog["images_root"]
    from groundrec.offline import images

    hashed = images.sha256((root / "0.jpg").read_bytes())
    batch = {"item_id": np.array(["ok", "missing", "replaced"], dtype=object),
             "image_uri": np.array([str(root / "0.jpg"), str(root / "nope.jpg"), str(root / "1.jpg")], dtype=object),
             "image_sha256": np.array([hashed, "", hashed], dtype=object),  # 1.jpg: other bytes than were hashed
             "cache_key": np.array(["k1", "k2", "k3"], dtype=object)}
    fn = GroundImages(vlm=HFVLMConfig(model=str(tiny_vlm("smolvlm")), max_new_tokens=6).model_dump(),
                      prompt=PromptConfig(style="structured").model_dump())
    out = fn(batch)
    assert out["ground_error"][0] == "" and "not found" in out["ground_error"][1]
    # an image replaced between the hash and the ground stage: its answer is not cached under the old bytes
    assert "changed while the job ran" in out["ground_error"][2] and out["vlm_text"][2] == ""
    assert out["vlm_text"][0] != "" or out["parse_error"][0] == "empty answer"
    assert out["parse_ok"][0] == False  # noqa: E712 - gibberish from a random model cannot fill 7 fields
    assert out["parse_error"][0]


def test_resolve_vlm_local_dir_and_offline_hub_name(tiny_vlm, tmp_path, monkeypatch):
    assert resolve_vlm(str(tiny_vlm("llava"))) == tiny_vlm("llava")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VLMUnavailable, match="no config.json"):
        resolve_vlm(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VLMUnavailable, match="make-tiny-vlm"):
        resolve_vlm("some-org/never-downloaded-vlm")


def test_the_check_refuses_a_model_that_does_not_read_images_before_any_work(tiny_vlm, tmp_path):
    """A text-only model (or a sentence encoder) has a config.json too: it passed, and failed
    inside the ground actors after every image was hashed, as a traceback."""
    from groundrec.offline.config import load_job_config

    cfg = load_job_config(None, {"catalog.path": "c.parquet", "vlm.model": str(tiny_vlm("llava"))}).vlm
    HFVLM.check(cfg)  # a real image-text-to-text architecture
    text_only = tmp_path / "bert"
    text_only.mkdir()
    (text_only / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(VLMUnavailable, match="'bert' model, not one that reads images"):
        HFVLM.check(cfg.model_copy(update={"model": str(text_only)}))


def test_fingerprint_changes_when_weights_change(tiny_vlm, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_vlm("blip"), d)
    before = model_fingerprint(str(d))
    assert before == model_fingerprint(str(d))
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes() + b"\0")
    assert model_fingerprint(str(d)) != before
    assert model_fingerprint("org/name", "v1") == "hub:org/name@v1"  # not in the cache: the revision as named


def test_a_hub_models_fingerprint_is_the_commit_its_revision_names_now(tmp_path, monkeypatch):
    """main moves: the grounding and embedding caches keyed "hub:name@main" mixed the answers of
    two sets of weights. The key names the commit the local cache resolves it to."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--some-org--a-vlm"
    (repo / "refs").mkdir(parents=True)
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs" / "main").write_text("a" * 40)
    assert model_fingerprint("some-org/a-vlm") == f"hub:some-org/a-vlm@{'a' * 40}"
    (repo / "refs" / "main").write_text("b" * 40)  # main moved (a download of new weights)
    assert model_fingerprint("some-org/a-vlm") == f"hub:some-org/a-vlm@{'b' * 40}"
    # the actors load that commit, not what main is on their node (ground_catalog pins it)
    pinned = HFVLM.pinned(HFVLMConfig(model="some-org/a-vlm"))
    assert pinned.revision == "b" * 40 and model_fingerprint(pinned.model, pinned.revision).endswith("b" * 40)
    assert HFVLM.pinned(HFVLMConfig(model="some-org/not-cached")).revision is None


def test_a_cache_entry_that_cannot_be_read_is_named_in_a_warning_not_swallowed(tmp_path, monkeypatch, caplog):
    """A real Hugging Face cache whose entry for the model is broken (its ``refs/main`` a
    folder, not the file holding the commit): resolving the name says so, then goes on to the
    hub (here: offline, so the usual fix). A name simply not cached gives no warning."""
    import logging

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models--some-org--broken-vlm" / "refs" / "main").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="groundrec.vlm"):
        with pytest.raises(VLMUnavailable, match="make-tiny-vlm"):
            resolve_vlm("some-org/broken-vlm")
        assert [r.getMessage() for r in caplog.records] == [
            f"VLM 'some-org/broken-vlm': the local Hugging Face cache was not used (IsADirectoryError: [Errno 21] "
            f"Is a directory: '{tmp_path}/models--some-org--broken-vlm/refs/main'); trying the hub"]
        caplog.clear()
        with pytest.raises(VLMUnavailable, match="make-tiny-vlm"):
            resolve_vlm("some-org/never-downloaded-vlm")
        assert caplog.records == []
