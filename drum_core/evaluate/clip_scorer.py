"""The evaluation CLIP (CLIP score): image and text embeddings of a transformers CLIPModel."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ClipScorer:
    """Image and text embeddings of an evaluation CLIP (transformers CLIPModel)."""

    def __init__(self, model, tokenizer, image_processor, device: torch.device | str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name: str, device: torch.device | str = "cpu") -> ClipScorer:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        return cls(CLIPModel.from_pretrained(name), AutoTokenizer.from_pretrained(name), CLIPImageProcessor.from_pretrained(name), device)

    @torch.no_grad()
    def image_features(self, images: Sequence) -> torch.Tensor:
        """PIL images -> [N, P] float32."""
        pixels = self.image_processor(images=list(images), return_tensors="pt").pixel_values.to(self.device, self.model.dtype)
        return _embeds(self.model.get_image_features(pixel_values=pixels)).float().cpu()

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts (cut to the model's context) -> [N, P] float32."""
        length = self.model.config.text_config.max_position_embeddings
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        return _embeds(self.model.get_text_features(input_ids=ids.to(self.device))).float().cpu()


def _embeds(output) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def tiny_clip_scorer(seed: int = 0, device: torch.device | str = "cpu") -> ClipScorer:
    """A random 32-wide CLIPModel for 32x32 images (tests, --tiny-random): every score is noise."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from .. import tiny

    tokenizer = tiny.clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=tiny.IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    processor = CLIPImageProcessor(size={"shortest_edge": tiny.IMAGE_SIZE}, crop_size={"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE})
    return ClipScorer(CLIPModel(config), tokenizer, processor, device)
