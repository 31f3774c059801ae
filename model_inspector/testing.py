"""Tiny random models of many architectures, built offline with ``AutoConfig.for_model``, and a
character tokenizer: for tests of code built on this library (no download, a few milliseconds)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 100  # = the char tokenizer's size
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=128)

#: model_type -> config keyword arguments (tiny: a few layers, 32-wide, 100-token vocabulary)
ARCHS = {
    "gpt2": dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128),
    "gpt_neox": dict(COMMON),
    "opt": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                ffn_dim=64, max_position_embeddings=128, word_embed_proj_dim=16),
    "llama": dict(COMMON, num_key_value_heads=2),
    "mistral": dict(COMMON, num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(COMMON, num_key_value_heads=2),
    "qwen3": dict(COMMON, num_key_value_heads=2, head_dim=8),
    "phi": dict(COMMON),
    "phi3": dict(COMMON, pad_token_id=0),
    "gemma": dict(COMMON, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(COMMON, num_key_value_heads=2, head_dim=8, final_logit_softcapping=2.0,
                   sliding_window=16),
    "gemma3_text": dict(COMMON, num_key_value_heads=2, head_dim=8, sliding_window=16),
    "bloom": dict(vocab_size=VOCAB, hidden_size=32, n_layer=3, n_head=4),
    "falcon": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4),
}


def tiny_model(model_type: str, seed: int = 0, **overrides):
    """A tiny random ``AutoModelForCausalLM`` (fp32, eval mode) of ``model_type``."""
    kwargs = dict(ARCHS[model_type], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kwargs.update(overrides)
    cfg = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    # random init gives near-uniform distributions; sharpen so entropies vary across layers
    with torch.no_grad():
        emb = model.get_input_embeddings()
        emb.weight.mul_(20.0)
    return model.eval()


def char_tokenizer():
    """A character-level fast tokenizer over printable ASCII (ids 4..98; 0 pad, 1 BOS, 2 EOS, 3 unk)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i, c in enumerate(chr(x) for x in range(32, 127)):
        vocab[c] = 4 + i
    vocab["\n"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
