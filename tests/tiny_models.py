"""Tiny random-weight models of real architectures, built entirely in code for tests.

Nothing here touches the network: the tokenizer is trained on a built-in corpus and the
weights are random. Each builder saves with ``save_pretrained`` so tests go through the real
``from_pretrained`` loading path.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|pad|>"]

# Plain English plus JSON punctuation, so prompts and {"a": "b"} tokenise into short pieces.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is in the image? A red car is parked next to a tall tree.",
    "Is the man holding an umbrella? Yes, he is holding a black umbrella.",
    "How many people are there? There are three people standing near the door.",
    "Answer the question with one word. The answer is yes. The answer is no.",
    "You are a helpful assistant that describes pictures carefully and briefly.",
    'The reply is JSON: {"answer": "yes", "confidence": 0.9, "items": ["cat", "dog"]}',
    '{"a": "b"} {"question": "what colour is the sky?", "reasoning": "it is blue"}',
    '[1, 2, 3] {"ok": true, "missing": null, "score": -1.5e3} {} [] "\\n" "\\"quoted\\""',
    "0 1 2 3 4 5 6 7 8 9 10 100 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Questions, answers, reasons; colours: red, green, blue, white, black!",
]


def train_tokenizer(directory: str | Path):
    """Train a small byte-level BPE with ChatML special tokens; save it and return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        # Every byte stays encodable, so any text (and any JSON) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_llama(directory: str | Path) -> Path:
    """Save a random 2-layer ``LlamaForCausalLM`` and its tokenizer under ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = train_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    return directory
