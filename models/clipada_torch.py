"""CLIP-ADA in PyTorch on open_clip: the model that models/train.py trains and models/export.py
exports to the clipada contract.

    image -> frozen CLIP ViT (open_clip) -> patch tokens of the tapped blocks
          -> ln_post -> proj (frozen) -> linear adapter per tapped block (trained)
          -> L2 normalise -> patch_features[l]
          -> logit_scale * cos(feature, text[normal|abnormal]) -> patch_logits[l] [2,h,w]
    class token of the last block -> ln_post -> proj -> L2 normalise -> image_logits [1,2]
    text[state] = normalised mean over the state's prompts of the frozen CLIP text encoder's
                  embedding, each prompt being N learnable context vectors (trained, one set per
                  state) followed by a pre-defined template filled with a state word.

The anomaly region refinement has no learnable parts (r = a (a/M)^s over the fused map, see
models/reference.py and docs/ARCHITECTURE.md): training uses the maps before it, and export
writes its parameters into the contract. All CLIP weights stay frozen.
"""

import dataclasses

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Pre-defined prompt parts (after WinCLIP / CLIP-ADA): state words and templates.
STATE_WORDS = {
    "normal": ["flawless", "perfect", "unblemished", "normal"],
    "abnormal": ["damaged", "defective", "broken", "anomalous"],
}
TEMPLATES = ["a photo of a {} object.", "a cropped photo of the {} object.", "a close-up photo of a {} object."]


@dataclasses.dataclass
class ModelConfig:
    """What defines a CLIP-ADA model besides the trained weights (stored in checkpoints)."""

    clip: str = "ViT-B-16"  # an open_clip model name, or "tiny" (random test configuration)
    image_size: int = 224  # input size; the positional embedding is resized to it at load
    taps: tuple = (6, 9, 12)  # 1-based transformer blocks whose patch tokens are used
    prompt_tokens: int = 8  # learnable context vectors per state
    seed: int = 0  # for "tiny": the random CLIP weights


def tiny_clip(seed):
    """A small CLIP (ViT: 64x64 input, 8x8 patches, 3 blocks, width 64; text: 2 layers) with
    seeded random weights, for tests: the same architecture as the real ones, scaled down."""
    torch.manual_seed(seed)
    vision = open_clip.model.CLIPVisionCfg(layers=3, width=64, head_width=16, patch_size=8, image_size=64)
    text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=4, layers=2)
    return open_clip.model.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=True)


def load_clip(config, weights=None):
    """The frozen CLIP of `config`: "tiny" is built from its seed; an open_clip model is built
    and its weights read from the local file `weights` (nothing is downloaded)."""
    if config.clip == "tiny":
        model = tiny_clip(config.seed)
    else:
        if weights is None:
            raise ValueError(
                f"{config.clip}: give the path of its open_clip weights (--weights); nothing is downloaded"
            )
        model = open_clip.create_model(config.clip, pretrained=str(weights), force_image_size=config.image_size)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PromptLearner(nn.Module):
    """Learnable context vectors per state, prepended to the pre-defined prompts."""

    def __init__(self, clip, n_ctx):
        super().__init__()
        width = clip.token_embedding.weight.shape[1]
        self.n_ctx = n_ctx
        self.context = nn.Parameter(torch.randn(2, n_ctx, width) * 0.02)
        placeholder = " ".join(["X"] * n_ctx)
        tokens = []
        for state in ("normal", "abnormal"):
            prompts = [f"{placeholder} {t.format(w)}" for w in STATE_WORDS[state] for t in TEMPLATES]
            tokens.append(open_clip.tokenize(prompts))
        tokens = torch.stack(tokens)  # [2, P, 77]
        # The text encoder's attention is causal, so the positions after the longest prompt's end
        # token change no end token's output: they are left out (most of the 77).
        if clip.attn_mask is not None:
            tokens = tokens[..., : int(tokens.argmax(dim=-1).max()) + 1]
        self.register_buffer("tokens", tokens, persistent=False)

    def forward(self, clip):
        """The two normalised text embeddings [2, E] (normal, abnormal)."""
        states, prompts, length = self.tokens.shape
        flat = self.tokens.reshape(states * prompts, length)
        x = clip.token_embedding(flat)  # [S*P, T, W]
        context = (
            self.context[:, None].expand(states, prompts, self.n_ctx, -1).reshape(states * prompts, self.n_ctx, -1)
        )
        # Token 0 is the start token; the next n_ctx are the placeholders the context replaces.
        x = torch.cat([x[:, :1], context, x[:, 1 + self.n_ctx :]], dim=1)
        x = x + clip.positional_embedding[:length]
        attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=attn_mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0]), flat.argmax(dim=-1)] @ clip.text_projection
        x = F.normalize(x, dim=-1).reshape(states, prompts, -1).mean(dim=1)
        return F.normalize(x, dim=-1)


class ClipAda(nn.Module):
    """Frozen CLIP + adapters + learnable prompts; `forward` gives the contract's raw outputs."""

    def __init__(self, config, clip):
        super().__init__()
        self.config = config
        self.clip = clip
        visual = clip.visual
        embed = visual.proj.shape[1]
        blocks = len(visual.transformer.resblocks)
        if not all(1 <= t <= blocks for t in config.taps):
            raise ValueError(f"taps {config.taps}: the model has blocks 1..{blocks}")
        self.adapters = nn.ModuleList(nn.Linear(embed, embed) for _ in config.taps)
        for adapter in self.adapters:  # start from CLIP's own joint space
            nn.init.eye_(adapter.weight)
            nn.init.zeros_(adapter.bias)
        self.prompts = PromptLearner(clip, config.prompt_tokens)
        self.grid = config.image_size // visual.patch_size[0]

    def trainable(self):
        return [p for n, p in self.named_parameters() if not n.startswith("clip.")]

    def text_embeddings(self):
        return self.prompts(self.clip)

    def frozen_features(self, image):
        """What the loss needs of the frozen image tower, for [B,3,H,W] normalised images: `patch`
        [B,L,N,E], the tapped blocks' patch tokens after ln_post and proj (the adapters' input), and
        `image` [B,E], the normalised class embedding. It has no trained parts, so training can
        compute it once per sample and cache it (models/train.py)."""
        visual = self.clip.visual
        x = visual._embeds(image)
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        taps = []
        for index, block in enumerate(visual.transformer.resblocks, start=1):
            x = block(x)
            if index in self.config.taps:
                taps.append(x if batch_first else x.transpose(0, 1))
        last = x if batch_first else x.transpose(0, 1)
        patch = torch.stack([visual.ln_post(tokens[:, 1:]) @ visual.proj for tokens in taps], dim=1)
        return {"patch": patch, "image": F.normalize(visual.ln_post(last[:, 0]) @ visual.proj, dim=-1)}

    def head(self, frozen, text=None):
        """The trained part: `frozen_features` -> dict of patch_logits [B,L,2,h,w], image_logits
        [B,2], patch_features [B,L,N,E]; `text` [2,E] (default: from the prompts)."""
        text = self.text_embeddings() if text is None else text
        scale = self.clip.logit_scale.exp()
        batch = frozen["patch"].shape[0]
        features, logits = [], []
        for tokens, adapter in zip(frozen["patch"].unbind(1), self.adapters, strict=True):
            f = F.normalize(adapter(tokens), dim=-1)  # [B,N,E]
            features.append(f)
            sim = scale * f @ text.T  # [B,N,2]
            logits.append(sim.transpose(1, 2).reshape(batch, 2, self.grid, self.grid))
        return {
            "patch_logits": torch.stack(logits, dim=1),
            "image_logits": scale * frozen["image"] @ text.T,
            "patch_features": torch.stack(features, dim=1),
        }

    def forward(self, image, text=None):
        """[B,3,H,W] normalised images -> `head` of their `frozen_features`."""
        return self.head(self.frozen_features(image), text)

    def state(self):
        """What a checkpoint keeps: the config and the trained parameters."""
        trained = {n: p.detach().float().cpu() for n, p in self.named_parameters() if not n.startswith("clip.")}
        return {"config": dataclasses.asdict(self.config), "trained": trained}


def from_checkpoint(path, weights=None):
    """The model saved at `path` (by train.py), with its CLIP from `weights`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = ModelConfig(**{k: tuple(v) if k == "taps" else v for k, v in state["config"].items()})
    model = ClipAda(config, load_clip(config, weights))
    missing = model.load_state_dict(state["trained"], strict=False)
    unexpected = [k for k in missing.unexpected_keys]
    absent = [k for k in missing.missing_keys if not k.startswith("clip.")]
    if unexpected or absent:
        raise ValueError(f"{path}: not a checkpoint of this model (unexpected {unexpected}, missing {absent})")
    return model.eval()
