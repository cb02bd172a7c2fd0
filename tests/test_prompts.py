"""Prompts: no double BOS when a chat template writes the BOS itself; a base model without a chat template gets the
Qwen2.5-Math CoT prompt as plain text."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from cft.errors import ConfigError
from cft.tasks import ChatTemplate
from cft.tasks.templates import QWEN_MATH_COT_SYSTEM, encode_prompt

WORDS = ["<s>", "</s>", "<unk>", "user:", "what", "is", "1", "+", "?"]


def _bos_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose post-processor adds <s> to every encoded text, like Llama's."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = chat_template
    return fast


def test_chat_template_that_writes_bos_gets_exactly_one():
    tok = _bos_tokenizer("{{ bos_token }}{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}")
    prompt = ChatTemplate(system=None).render("what is 1 + 1 ?", tok)
    assert prompt.startswith("<s>")
    assert tok(prompt)["input_ids"][:2] == [0, 0]  # what a plain encode does: two BOS
    ids = encode_prompt(tok, prompt)
    assert ids[0] == 0 and ids.count(0) == 1
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]


def test_prompt_without_bos_in_its_text_gets_the_tokenizers_bos():
    tok = _bos_tokenizer(None)
    ids = encode_prompt(tok, "what is 1 + 1 ?")
    assert ids == [0, 4, 5, 6, 7, 6, 8]


def test_base_model_without_chat_template_gets_the_qwen_math_prompt_as_plain_text():
    tok = _bos_tokenizer(None)
    prompt = ChatTemplate().render("What is 1 + 1?", tok)
    assert prompt == (
        f"<|im_start|>system\n{QWEN_MATH_COT_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(ConfigError, match="no chat template"):
        ChatTemplate(without_template="error").render("What is 1 + 1?", tok)
