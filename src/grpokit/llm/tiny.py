"""Tiny causal language models built in code: a word-level tokenizer and a small GPT-2.

Nothing is downloaded: the tokenizer is a ``tokenizers`` word-level model over a given word list
(plus ``<pad>``, ``<eos>``, ``<unk>``), the model a :class:`transformers.GPT2LMHeadModel` from a
config. They serve the tests and the persona benchmark, where a model of ~10^5 parameters trains
on a CPU in seconds. Needs the ``llm`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SPECIAL_TOKENS", "tiny_tokenizer", "tiny_model"]

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def tiny_tokenizer(words: Sequence[str]):
    """A whitespace word-level fast tokenizer over ``words``; pad = ``<pad>``, eos = ``<eos>``.

    Prompts are left-padded (as generation needs); decoding joins words with single spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(words))
    clash = [w for w in words if w in SPECIAL_TOKENS or not w or any(c.isspace() for c in w)]
    if clash:
        raise ValueError(f"tokenizer words must be non-empty, without spaces and not special tokens; got {clash[:5]}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces, "!" stays a word
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast


def tiny_model(tokenizer, *, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_positions: int = 64, seed: int = 0):
    """A freshly initialized GPT-2 of ``n_layer`` layers and width ``n_embd`` for ``tokenizer``'s vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
