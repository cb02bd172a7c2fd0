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


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SHOTS = [{"question": "Compute 12 + 15.", "solution": "12 + 15 = 27.\nThe final answer is $\\boxed{27}$."}]


def test_few_shot_examples_are_user_and_assistant_turns_before_the_question():
    expected = (
        f"<|im_start|>system\n{QWEN_MATH_COT_SYSTEM}<|im_end|>\n<|im_start|>user\nCompute 12 + 15.<|im_end|>\n"
        "<|im_start|>assistant\n12 + 15 = 27.\nThe final answer is $\\boxed{27}$.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ChatTemplate(examples=SHOTS).render("What is 1 + 1?", _bos_tokenizer(CHATML)) == expected
    # A tokenizer without a chat template gets the same text from the harness's plain string.
    assert ChatTemplate(examples=SHOTS).render("What is 1 + 1?", _bos_tokenizer(None)) == expected
    assert "examples" not in repr(ChatTemplate()) and "12 + 15" in repr(ChatTemplate(examples=SHOTS))


@pytest.mark.parametrize(
    "examples, match",
    [
        ([{"question": "q"}], r"examples\[0\]: expected keys \['question', 'solution'\], got \['question'\]"),
        ([SHOTS[0], {"question": "q", "solution": " "}], r"examples\[1\]\.solution: expected a non-empty string"),
        (["Compute 1 + 1."], r"examples\[0\]: expected keys .* got str"),
    ],
)
def test_malformed_few_shot_examples_are_one_clear_error(examples, match):
    with pytest.raises(ConfigError, match=match):
        ChatTemplate(examples=examples)
