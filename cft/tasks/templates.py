"""Prompt rendering: the tiny world's plain `Question/Answer` format and chat templates for instruct models."""

from __future__ import annotations

from typing import Any, Literal

from cft.errors import ConfigError

__all__ = ["QWEN_MATH_COT_SYSTEM", "ChatTemplate", "PlainTemplate", "PromptTemplate", "encode_prompt"]

QWEN_MATH_COT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt of the Qwen2.5-Math chain-of-thought evaluation, which the paper's numbers use."""

QWEN_MATH_COT_PLAIN = (
    "<|im_start|>system\n{system}<|im_end|>\n{shots}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)
"""The harness's `qwen25-math-cot` prompt as a string: what it feeds any model, chat template or not."""


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt with the tokenizer's special tokens, except a second BOS: a chat template that
    writes the BOS itself (Llama 3's `<|begin_of_text|>`, OLMo 2's `<|endoftext|>`) must not get another one."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add)["input_ids"])


class PromptTemplate:
    """Turns a question into the exact text the model is conditioned on; the response follows it verbatim."""

    def render(self, question: str, tokenizer: Any = None) -> str:
        raise NotImplementedError


class PlainTemplate(PromptTemplate):
    """A plain-text prompt; the training text is `render(question) + solution` followed by EOS.

    The default prompt ends with a newline, so the response (the solution) starts at the beginning of a line
    with no leading space, e.g. `"Question: Compute 3 + 4 * 2.\\nAnswer:\\n"` + `"4 * 2 = 8\\n3 + 8 = 11\\n#### 11"`.

    Args:
        template: Format string with a `{question}` field.
    """

    def __init__(self, template: str = "Question: {question}\nAnswer:\n") -> None:
        if "{question}" not in template:
            raise ConfigError(f"PlainTemplate: template {template!r} has no '{{question}}' field")
        self.template = template

    def render(self, question: str, tokenizer: Any = None) -> str:
        return self.template.format(question=question)

    def __repr__(self) -> str:
        return f"PlainTemplate(template={self.template!r})"


class ChatTemplate(PromptTemplate):
    """The tokenizer's own chat template with an optional system message; the response is the assistant turn.

    Args:
        system: System message, or None for none.
        add_generation_prompt: End the prompt with the assistant header so the model answers next.
        without_template: for a tokenizer without a chat template (a base model): "qwen_math" renders the
            Qwen2.5-Math CoT prompt as plain text (the harness's own string, `system` inside it), "error" refuses.
        examples: few-shot demonstrations, each `{"question": ..., "solution": ...}`, rendered as user / assistant
            turns between the system message and the question (for a small model that ignores the system
            prompt's answer format, e.g. SmolLM2-135M never writes `\\boxed{}` zero-shot).
    """

    def __init__(
        self,
        system: str | None = QWEN_MATH_COT_SYSTEM,
        add_generation_prompt: bool = True,
        without_template: Literal["qwen_math", "error"] = "qwen_math",
        examples: list[dict[str, str]] | None = None,
    ) -> None:
        if without_template not in ("qwen_math", "error"):
            raise ConfigError(f"ChatTemplate.without_template must be 'qwen_math' or 'error', got {without_template!r}")
        for i, ex in enumerate(examples or []):
            if not isinstance(ex, dict) or set(ex) != {"question", "solution"}:
                got = sorted(ex) if isinstance(ex, dict) else type(ex).__name__
                raise ConfigError(f"ChatTemplate.examples[{i}]: expected keys ['question', 'solution'], got {got}")
            for key in ("question", "solution"):
                if not isinstance(ex[key], str) or not ex[key].strip():
                    raise ConfigError(f"ChatTemplate.examples[{i}].{key}: expected a non-empty string, got {ex[key]!r}")
        self.system = system
        self.add_generation_prompt = add_generation_prompt
        self.without_template = without_template
        self.examples = [dict(ex) for ex in examples or []]

    def render(self, question: str, tokenizer: Any = None) -> str:
        if tokenizer is None:
            raise ConfigError("ChatTemplate.render needs the tokenizer whose chat template it applies")
        if not getattr(tokenizer, "chat_template", None):
            if self.without_template == "qwen_math":
                shots = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in self._shot_turns())
                return QWEN_MATH_COT_PLAIN.format(system=self.system or "", question=question, shots=shots)
            name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
            raise ConfigError(f"tokenizer {name!r} has no chat template; use PlainTemplate for base models or set one")
        messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        messages += self._shot_turns()
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=self.add_generation_prompt)

    def _shot_turns(self) -> list[dict[str, str]]:
        """The few-shot examples as chat messages: a user turn (question) and an assistant turn (solution) each."""
        return [
            {"role": role, "content": ex[key]}
            for ex in self.examples
            for role, key in (("user", "question"), ("assistant", "solution"))
        ]

    def __repr__(self) -> str:
        return (
            f"ChatTemplate(system={self.system!r}, add_generation_prompt={self.add_generation_prompt}, "
            f"without_template={self.without_template!r}" + (f", examples={self.examples!r})" if self.examples else ")")
        )
